"""Circuit breaker per arm: closed → open after N consecutive failures → half-open after a timeout, where
exactly one probe is let through; its success closes the breaker, its failure re-opens it with a fresh timeout.

State lives behind ``BreakerStore`` so that a shared store (Redis) can hold it; the clock is injected.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from learned_router.protocols import Clock, SystemClock

__all__ = ["BreakerState", "BreakerStore", "CircuitBreaker", "MemoryBreakerStore"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True, slots=True)
class BreakerState:
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False
    trips: int = 0


class BreakerStore(Protocol):
    """Holds breaker states. ``update`` applies ``fn`` atomically and returns the new state."""

    def get(self, arm: str) -> BreakerState: ...

    def get_many(self, arms: Sequence[str]) -> list[BreakerState]: ...

    def update(self, arm: str, fn: _Transition) -> tuple[BreakerState, object]: ...


class _Transition(Protocol):
    def __call__(self, state: BreakerState) -> tuple[BreakerState, object]: ...


_CLOSED = BreakerState()


class MemoryBreakerStore:
    """In-process breaker state behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, BreakerState] = {}

    def get(self, arm: str) -> BreakerState:
        # States are immutable and replaced whole under the lock; a dict read needs no lock.
        return self._states.get(arm, _CLOSED)

    def get_many(self, arms: Sequence[str]) -> list[BreakerState]:
        states = self._states
        return [states.get(a, _CLOSED) for a in arms]

    def update(self, arm: str, fn: _Transition) -> tuple[BreakerState, object]:
        with self._lock:
            new, result = fn(self._states.get(arm, BreakerState()))
            self._states[arm] = new
            return new, result


class CircuitBreaker:
    """Args:
        failure_threshold: consecutive failures that open the breaker (5).
        reset_timeout_s: time an open breaker waits before letting one probe through (60 s).
        clock: injected; tests use ``testing.FakeClock``.
        store: where the state lives.
    """

    def __init__(self, *, failure_threshold: int = 5, reset_timeout_s: float = 60.0,
                 clock: Clock | None = None, store: BreakerStore | None = None) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.clock = clock or SystemClock()
        self.store = store or MemoryBreakerStore()

    def _time(self) -> float:
        # Wall-clock seconds, not monotonic: the state may be shared (Redis) by routers on other machines,
        # and only wall time means the same thing in every process.
        return self.clock.now().timestamp()

    def state(self, arm: str) -> str:
        """The state as seen now: an open breaker whose timeout has passed reads as half-open."""
        s = self.store.get(arm)
        if s.state == OPEN and self._time() - s.opened_at >= self.reset_timeout_s:
            return HALF_OPEN
        return s.state

    def snapshot(self, arm: str) -> BreakerState:
        return self.store.get(arm)

    def available(self, arm: str) -> bool:
        """Whether a call could be let through now (without claiming the probe)."""
        s = self.store.get(arm)
        if s.state is CLOSED or s.state == CLOSED:
            return True
        if s.state == OPEN:
            return self._time() - s.opened_at >= self.reset_timeout_s
        return not s.probe_in_flight

    def refusing(self, arms: Sequence[str]) -> set[str]:
        """The arms among ``arms`` whose breaker would not let a call through now: ``available`` for many
        arms with one store read (one round trip on a shared store)."""
        out: set[str] = set()
        now: float | None = None
        for arm, s in zip(arms, self.store.get_many(arms), strict=True):
            if s.state is CLOSED or s.state == CLOSED:
                continue
            if s.state == OPEN:
                now = self._time() if now is None else now
                if now - s.opened_at < self.reset_timeout_s:
                    out.add(arm)
            elif s.probe_in_flight:
                out.add(arm)
        return out

    def allow(self, arm: str) -> bool:
        """Claim permission for one call. In half-open state exactly one caller gets True."""
        now = self._time()

        def fn(s: BreakerState) -> tuple[BreakerState, object]:
            if s.state == CLOSED:
                return s, True
            if s.state == OPEN:
                if now - s.opened_at < self.reset_timeout_s:
                    return s, False
                return replace(s, state=HALF_OPEN, probe_in_flight=True), True
            if s.probe_in_flight:
                return s, False
            return replace(s, probe_in_flight=True), True

        return bool(self.store.update(arm, fn)[1])

    def record_success(self, arm: str) -> None:
        self.store.update(arm, lambda s: (replace(s, state=CLOSED, failures=0, probe_in_flight=False), None))

    def record_failure(self, arm: str) -> bool:
        """Count a failure; returns True when this failure tripped (opened) the breaker."""
        now = self._time()

        def fn(s: BreakerState) -> tuple[BreakerState, object]:
            if s.state == HALF_OPEN:
                return replace(s, state=OPEN, opened_at=now, probe_in_flight=False, failures=s.failures + 1,
                               trips=s.trips + 1), True
            failures = s.failures + 1
            if s.state == CLOSED and failures >= self.failure_threshold:
                return replace(s, state=OPEN, opened_at=now, failures=failures, trips=s.trips + 1), True
            return replace(s, failures=failures), False

        return bool(self.store.update(arm, fn)[1])

    def release(self, arm: str) -> None:
        """Give back a probe claim without a verdict (the call was never made)."""
        self.store.update(arm, lambda s: (replace(s, probe_in_flight=False), None))
