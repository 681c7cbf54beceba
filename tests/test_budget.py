from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learned_router.budget import BudgetLedger, Reservation
from learned_router.errors import BudgetExceededError
from learned_router.testing import FakeClock


def test_reserve_commit_and_window_reset():
    clock = FakeClock(datetime(2026, 3, 1, 23, 0, tzinfo=UTC))
    b = BudgetLedger(provider_limits={"p": 1.0}, window="day", clock=clock)
    r = b.reserve("p", None, 0.6)
    assert isinstance(r, Reservation)
    assert b.reserve("p", None, 0.6) == "provider"
    b.commit(r, 0.2)
    assert b.spent("provider", "p") == pytest.approx(0.2)
    assert b.provider_headroom("p", 0.9) is not None and b.provider_headroom("p", 0.7) is None
    clock.advance(3600)  # next day: a fresh window
    assert b.spent("provider", "p") == 0.0


def test_tenant_over_cap_gets_a_clear_error():
    b = BudgetLedger(tenant_limits={"acme": 0.5}, window="month", clock=FakeClock())
    r = b.reserve("p", "acme", 0.5)
    assert isinstance(r, Reservation)
    with pytest.raises(BudgetExceededError, match="tenant 'acme' is over its budget.*per month"):
        b.reserve("p", "acme", 0.01)
    b.release(r)
    b.check_tenant("acme", 0.4)


@settings(max_examples=40, deadline=None)
@given(
    limit=st.floats(min_value=0.01, max_value=10),
    costs=st.lists(st.floats(min_value=0.0001, max_value=1.0), min_size=1, max_size=60),
    threads=st.integers(min_value=2, max_value=8),
)
def test_concurrent_reservations_never_overshoot(limit, costs, threads):
    """With the real cost equal to the estimate, concurrent admits never exceed the cap; spent + reserved
    never exceeds it at any moment either."""
    b = BudgetLedger(provider_limits={"p": limit}, tenant_limits={"t": limit * 2}, clock=FakeClock())
    admitted: list[float] = []
    lock = threading.Lock()
    peak = [0.0]

    def worker(share):
        for c in share:
            r = b.reserve("p", "t", c)
            if isinstance(r, Reservation):
                with lock:
                    peak[0] = max(peak[0], b.spent("provider", "p"))
                b.commit(r, c)
                with lock:
                    admitted.append(c)

    shares = [costs[i::threads] for i in range(threads)]
    ts = [threading.Thread(target=worker, args=(s,)) for s in shares]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sum(admitted) <= limit + 1e-9
    assert peak[0] <= limit + 1e-9
    assert b.spent("provider", "p") == pytest.approx(sum(admitted))


@settings(max_examples=40, deadline=None)
@given(est=st.floats(min_value=0.01, max_value=1), actual=st.floats(min_value=0, max_value=3),
       n=st.integers(min_value=1, max_value=20))
def test_overshoot_bounded_by_in_flight_estimates(est, actual, n):
    """Admitted requests whose real cost differs from the estimate overshoot the cap by at most
    what they cost beyond their estimates."""
    limit = 1.0
    b = BudgetLedger(provider_limits={"p": limit}, clock=FakeClock())
    held = [r for r in (b.reserve("p", None, est) for _ in range(n)) if isinstance(r, Reservation)]
    assert len(held) * est <= limit + 1e-9
    for r in held:
        b.commit(r, actual)
    assert b.spent("provider", "p") <= limit + len(held) * max(0.0, actual - est) + 1e-9
