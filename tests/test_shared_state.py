"""Budget and breaker state shared through the real Redis server on 127.0.0.1:6379."""

from __future__ import annotations

import threading
import uuid

import pytest

from learned_router.breaker import CircuitBreaker
from learned_router.budget import BudgetLedger, Reservation
from learned_router.shared_state import RedisBreakerStore, RedisBudgetBackend, connect
from learned_router.testing import FakeClock


@pytest.fixture()
def redis_client():
    client = connect("redis://127.0.0.1:6379/0")
    client.ping()
    prefix = f"test-{uuid.uuid4().hex}:"
    yield client, prefix
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)
    client.close()


def test_two_ledgers_share_one_cap(redis_client):
    client, prefix = redis_client
    clock = FakeClock()
    ledgers = [BudgetLedger(provider_limits={"p": 1.0}, tenant_limits={"t": 10.0}, clock=clock,
                            backend=RedisBudgetBackend(client, prefix=prefix)) for _ in range(2)]
    admitted: list[float] = []
    lock = threading.Lock()

    def worker(ledger):
        for _ in range(40):
            r = ledger.reserve("p", "t", 0.03)
            if isinstance(r, Reservation):
                ledger.commit(r, 0.03)
                with lock:
                    admitted.append(0.03)

    threads = [threading.Thread(target=worker, args=(ledgers[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 33  # floor(1.0 / 0.03): never more, whichever process admits
    assert ledgers[1].spent("provider", "p") == pytest.approx(0.99)
    assert ledgers[0].provider_headroom("p", 0.02) is not None


def test_settle_replaces_the_estimate_with_the_real_cost(redis_client):
    client, prefix = redis_client
    ledger = BudgetLedger(provider_limits={"p": 1.0}, clock=FakeClock(), backend=RedisBudgetBackend(client, prefix=prefix))
    r = ledger.reserve("p", None, 0.5)
    assert isinstance(r, Reservation)
    ledger.commit(r, 0.1)
    assert ledger.spent("provider", "p") == pytest.approx(0.1)
    ledger.release(ledger.reserve("p", None, 0.2))
    assert ledger.spent("provider", "p") == pytest.approx(0.1)


def test_breaker_state_is_shared_between_processes(redis_client):
    client, prefix = redis_client
    clock = FakeClock()
    a = CircuitBreaker(failure_threshold=2, reset_timeout_s=10, clock=clock, store=RedisBreakerStore(client, prefix=prefix))
    b = CircuitBreaker(failure_threshold=2, reset_timeout_s=10, clock=clock, store=RedisBreakerStore(client, prefix=prefix))
    a.record_failure("x::m")
    assert a.refusing(["x::m", "y::m"]) == set()
    assert b.record_failure("x::m")  # the second failure, seen by another router, trips it
    assert a.state("x::m") == "open"
    assert a.refusing(["x::m", "y::m"]) == {"x::m"} and a.refusing([]) == set()  # one MGET for all arms
    clock.advance(10)
    results = []
    threads = [threading.Thread(target=lambda br=br: results.append(br.allow("x::m"))) for br in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1  # one probe across both routers
    b.record_success("x::m")
    assert a.state("x::m") == "closed"
