from __future__ import annotations

import threading

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from learned_router.breaker import CircuitBreaker
from learned_router.testing import FakeClock

ARM = "p::m"


def make(threshold=5, timeout=60.0):
    clock = FakeClock()
    return CircuitBreaker(failure_threshold=threshold, reset_timeout_s=timeout, clock=clock), clock


def test_opens_after_consecutive_failures_and_probes_once():
    b, clock = make()
    for _ in range(4):
        assert b.allow(ARM)
        assert not b.record_failure(ARM)
    assert b.state(ARM) == "closed"
    assert b.allow(ARM)
    assert b.record_failure(ARM)  # the fifth trips it
    assert b.state(ARM) == "open" and not b.allow(ARM)
    clock.advance(59.9)
    assert not b.allow(ARM)
    clock.advance(0.2)
    assert b.state(ARM) == "half_open"
    assert b.allow(ARM)  # exactly one probe
    assert not b.allow(ARM)
    b.record_success(ARM)
    assert b.state(ARM) == "closed" and b.allow(ARM) and b.allow(ARM)


def test_failed_probe_reopens_with_fresh_timeout():
    b, clock = make(threshold=1, timeout=10)
    b.allow(ARM)
    b.record_failure(ARM)
    clock.advance(10)
    assert b.allow(ARM)
    assert b.record_failure(ARM)
    assert b.state(ARM) == "open"
    clock.advance(9.9)
    assert not b.allow(ARM)
    clock.advance(0.1)
    assert b.allow(ARM)
    assert b.snapshot(ARM).trips == 2


def test_success_resets_the_failure_count():
    b, _ = make(threshold=3)
    for _ in range(2):
        b.record_failure(ARM)
    b.record_success(ARM)
    for _ in range(2):
        b.record_failure(ARM)
    assert b.state(ARM) == "closed"


def test_only_one_concurrent_probe():
    b, clock = make(threshold=1, timeout=1)
    b.record_failure(ARM)
    clock.advance(1)
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def worker():
        barrier.wait()
        results.append(b.allow(ARM))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


class BreakerMachine(RuleBasedStateMachine):
    """Model-based test: the breaker agrees with a tiny reference model under a fake clock."""

    def __init__(self):
        super().__init__()
        self.b, self.clock = make(threshold=3, timeout=5)
        self.model_state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.probe = False
        self.holding = False

    def _model_view(self):
        if self.model_state == "open" and self.clock.monotonic() - self.opened_at >= 5:
            return "half_open"
        return self.model_state

    @rule(dt=st.floats(min_value=0, max_value=7))
    def tick(self, dt):
        self.clock.advance(dt)

    @precondition(lambda self: not self.holding)
    @rule()
    def ask(self):
        view = self._model_view()
        expected = view == "closed" or (view == "half_open" and not self.probe)
        got = self.b.allow(ARM)
        assert got == expected
        if got:
            self.holding = True
            if view == "half_open":
                self.model_state, self.probe = "half_open", True

    @precondition(lambda self: self.holding)
    @rule(ok=st.booleans())
    def finish(self, ok):
        self.holding = False
        if ok:
            self.b.record_success(ARM)
            self.model_state, self.failures, self.probe = "closed", 0, False
            return
        tripped = self.b.record_failure(ARM)
        self.failures += 1
        if self.model_state == "half_open" or self.failures >= 3:
            assert tripped
            self.model_state, self.opened_at, self.probe = "open", self.clock.monotonic(), False
        else:
            assert not tripped

    @invariant()
    def states_agree(self):
        assert self.b.state(ARM) == self._model_view()

    @invariant()
    def batch_view_agrees(self):
        # what routing reads (one store read for every arm) says what ``available`` says for each arm
        view = self._model_view()
        open_now = view == "open" or (view == "half_open" and self.probe)
        assert self.b.available(ARM) is not open_now
        assert self.b.refusing([ARM, "other::m"]) == ({ARM} if open_now else set())


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
