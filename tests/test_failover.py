"""``complete`` and ``stream`` end to end against simulated providers on loopback: failover, the breaker,
Retry-After, context windows, deadlines, and the report."""

from __future__ import annotations

import anyio
import pytest

from learned_router import AllAttemptsFailedError, AsyncRouter, ProviderError, Router
from learned_router.sim_fleet import SimFleet
from learned_router.simulator import SimProfile

MSG = {"messages": [{"role": "user", "content": "Explain what a circuit breaker does."}]}


@pytest.fixture(scope="module")
def fleet():
    profiles = [
        SimProfile("broken", default_quality=0.99, price_in_per_mtok=0.1, price_out_per_mtok=0.1),
        SimProfile("hangs", default_quality=0.98, price_in_per_mtok=0.2, price_out_per_mtok=0.2, hang_s=5),
        SimProfile("works", default_quality=0.9, price_in_per_mtok=5, price_out_per_mtok=10),
        SimProfile("small", default_quality=0.97, price_in_per_mtok=0.05, price_out_per_mtok=0.05,
                   max_context_tokens=50),
    ]
    with SimFleet(profiles) as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fleet):
    for p in fleet.profiles.values():
        p.set_mode("ok")
    yield


def config(fleet, names, **routing):
    return {
        "providers": [fleet.provider_entry(n, quality_prior=fleet.profiles[n].default_quality) for n in names],
        "routing": {"strategy": "quality", **routing},
        "failover": {"attempt_timeout_s": 0.5, "deadline_s": 10},
    }


def test_every_request_succeeds_while_one_fails_and_one_hangs(fleet):
    fleet.profiles["broken"].set_mode("error500")
    fleet.profiles["hangs"].set_mode("timeout")
    router = Router.from_config(config(fleet, ["broken", "hangs", "works"]))
    served = [router.complete(MSG) for _ in range(12)]
    assert all(c.provider == "works" and c.text for c in served)
    first = served[0].outcome.attempts
    assert [(a.arm.split("::")[0], a.status, a.error_kind) for a in first] == [
        ("broken", "error", "unavailable"), ("hangs", "error", "timeout"), ("works", "ok", None)]
    assert router.breaker.state("broken::sim-1") == "open"
    assert router.breaker.state("hangs::sim-1") == "open"
    # once open, the broken providers are excluded before the call
    assert "circuit breaker open" in served[-1].decision.excluded["broken::sim-1"]
    report = {row["arm"]: row for row in router.report()["providers"]}
    assert report["broken::sim-1"]["breaker_trips"] == 1
    assert report["broken::sim-1"]["errors_by_kind"] == {"unavailable": 5}
    assert report["hangs::sim-1"]["errors_by_kind"] == {"timeout": 5}
    assert report["works::sim-1"]["successes"] == 12
    assert report["works::sim-1"]["total_cost_usd"] == pytest.approx(sum(c.cost_usd for c in served))
    assert report["works::sim-1"]["latency_p50_ms"] is not None
    router.close()


def test_cost_is_computed_from_usage_and_prices(fleet):
    router = Router.from_config(config(fleet, ["works"]))
    c = router.complete(MSG)
    assert c.input_tokens > 0 and c.output_tokens > 0
    assert c.cost_usd == pytest.approx((c.input_tokens * 5 + c.output_tokens * 10) / 1e6)
    assert c.outcome.served_arm == "works::sim-1" and c.latency_s > 0
    router.close()


def test_breaker_recovers_through_one_probe(fleet):
    import time

    fleet.profiles["broken"].set_mode("error500")
    cfg = config(fleet, ["broken", "works"])
    cfg["breaker"] = {"failure_threshold": 2, "reset_timeout_s": 0.3}
    router = Router.from_config(cfg)
    for _ in range(3):
        assert router.complete(MSG).provider == "works"
    assert router.breaker.state("broken::sim-1") == "open"
    fleet.profiles["broken"].set_mode("ok")
    time.sleep(0.35)
    assert router.breaker.state("broken::sim-1") == "half_open"
    assert router.complete(MSG).provider == "broken"  # the probe succeeds
    assert router.breaker.state("broken::sim-1") == "closed"
    router.close()


def test_rate_limit_honours_retry_after(fleet):
    fleet.profiles["broken"].set_mode("rate_limit")
    router = Router.from_config(config(fleet, ["broken", "works"]))
    c = router.complete(MSG)
    assert c.provider == "works"
    assert c.outcome.attempts[0].error_kind == "rate_limited"
    d = router.route(MSG)  # the provider asked for 1 s: it is out of rotation meanwhile
    assert "retry after" in d.excluded["broken::sim-1"]
    assert router.breaker.state("broken::sim-1") == "closed"
    router.close()


def test_context_length_error_moves_to_a_larger_window(fleet):
    cfg = config(fleet, ["small", "works"])
    cfg["providers"][0]["max_context_tokens"] = 4000  # configured larger than the real window
    cfg["providers"][1]["max_context_tokens"] = 8000
    router = Router.from_config(cfg)
    long = {"messages": [{"role": "user", "content": "Summarise: " + "word " * 400}]}
    c = router.complete(long)
    assert c.provider == "works"
    assert c.outcome.attempts[0].error_kind == "context_length"
    assert router.breaker.state("small::sim-1") == "closed"
    router.close()


def test_all_attempts_failed_carries_every_attempt(fleet):
    fleet.profiles["broken"].set_mode("error500")
    fleet.profiles["works"].set_mode("malformed")
    router = Router.from_config(config(fleet, ["broken", "works"]))
    with pytest.raises(AllAttemptsFailedError) as info:
        router.complete(MSG)
    kinds = [(a.arm, a.error_kind) for a in info.value.attempts]
    assert kinds == [("broken::sim-1", "unavailable"), ("works::sim-1", "bad_response")]
    assert router.report()["failed_requests"] == 1
    router.close()


def test_non_retryable_error_does_not_fail_over(fleet):
    """A 400 means the request itself is bad: trying it elsewhere would only spend money."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from learned_router.threaded_server import serve_in_thread

    async def reject(request):
        return JSONResponse({"error": {"message": "temperature must be <= 2", "type": "invalid_request_error"}},
                            status_code=400)

    app = Starlette(routes=[Route("/v1/chat/completions", reject, methods=["POST"])])
    with serve_in_thread(app) as strict:
        cfg = config(fleet, ["works"])
        cfg["providers"].insert(0, {"name": "strict", "kind": "openai", "base_url": f"{strict.url}/v1",
                                    "model": "m", "price_in_per_mtok": 0.01, "price_out_per_mtok": 0.01,
                                    "quality_prior": 0.99})
        router = Router.from_config(cfg)
        before = fleet.profiles["works"].calls
        with pytest.raises(AllAttemptsFailedError) as info:
            router.complete(MSG)
        assert [(a.arm, a.error_kind, a.retryable) for a in info.value.attempts] == [
            ("strict::m", "rejected", False)]
        assert fleet.profiles["works"].calls == before  # never tried elsewhere
        assert router.breaker.snapshot("strict::m").failures == 0  # the provider is not at fault
        router.close()


def test_overall_deadline_bounds_the_walk(fleet):
    fleet.profiles["broken"].set_mode("timeout")
    fleet.profiles["hangs"].set_mode("timeout")
    cfg = config(fleet, ["broken", "hangs", "works"])
    cfg["failover"] = {"attempt_timeout_s": 0.4, "deadline_s": 0.6}
    router = Router.from_config(cfg)
    with pytest.raises(AllAttemptsFailedError) as info:
        router.complete(MSG)
    kinds = [a.error_kind for a in info.value.attempts]
    assert kinds[:2] == ["timeout", "timeout"] and "works::sim-1" not in [
        a.arm for a in info.value.attempts if a.status == "ok"]
    router.close()


def test_stream_fails_over_before_the_first_chunk(fleet):
    fleet.profiles["broken"].set_mode("error500")
    router = Router.from_config(config(fleet, ["broken", "works"]))
    s = router.stream(MSG)
    text = "".join(chunk.text for chunk in s)
    assert text and s.served_arm == "works::sim-1"
    assert s.completion is not None and s.completion.output_tokens > 0 and s.completion.cost_usd > 0
    assert [a.error_kind for a in s.completion.outcome.attempts] == ["unavailable", None]
    router.close()


def test_stream_cut_after_first_chunk_raises_and_is_recorded(fleet):
    fleet.profiles["broken"].set_mode("stream_cut")
    router = Router.from_config(config(fleet, ["broken", "works"]))
    s = router.stream(MSG)
    got = []
    with pytest.raises(ProviderError):
        for chunk in s:
            got.append(chunk.text)
    assert got  # some text arrived before the cut, and no other provider was tried after it
    assert s.completion is None
    assert router.report()["failed_requests"] == 1
    router.close()


def test_async_router_fails_over_concurrently(fleet):
    fleet.profiles["broken"].set_mode("reset")

    async def main():
        router = AsyncRouter.from_config(config(fleet, ["broken", "works"]))
        results = []

        async def one():
            results.append(await router.complete(MSG))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
        s = router.stream(MSG)
        chunks = [c.text async for c in s]
        await router.aclose()
        return results, chunks, s

    results, chunks, s = anyio.run(main)
    assert all(r.provider == "works" for r in results)
    assert "".join(chunks) and s.completion is not None


def test_the_predicted_cost_learns_each_arms_answer_length():
    """Two providers; the one with the lower list price answers at great length, so it is really the dearer
    one. Its predicted cost starts from list prices and the request's expected length, then follows the
    output tokens its answers are billed for, until it is above the terse provider's: the cost rule moves
    over to the terse one, and a per-request cost ceiling between the two learned estimates excludes the
    verbose one. A caller's max_tokens still prices every arm at that worst case."""
    profiles = [
        SimProfile("wordy", price_in_per_mtok=1.0, price_out_per_mtok=1.5, min_words=600, max_words=600),
        SimProfile("terse", price_in_per_mtok=1.0, price_out_per_mtok=2.0, min_words=5, max_words=8),
    ]
    with SimFleet(profiles) as f:
        router = Router.from_config({"providers": [f.provider_entry(n) for n in ("wordy", "terse")],
                                     "routing": {"strategy": "cost"}})
        before = router.route(MSG)
        expected = before.output_tokens_est
        in_cost = before.input_tokens_est * 1.0 / 1e6
        listed = {"wordy::sim-1": in_cost + expected * 1.5 / 1e6, "terse::sim-1": in_cost + expected * 2.0 / 1e6}
        assert before.est_cost_usd == pytest.approx(listed)
        ceiling = {**MSG, "max_cost_usd": 1.1 * listed["terse::sim-1"]}  # above both list estimates
        admitted = router.route(ceiling)
        assert admitted.provider == "wordy" and not admitted.excluded
        first = router.complete(MSG)  # the cost rule ranks by estimated cost, at list prices so far: wordy
        assert first.provider == "wordy"
        assert first.outcome.output_tokens > 2 * expected  # the long answer
        served = [router.complete(MSG).provider for _ in range(8)]
        assert served[-1] == "terse" and served.count("wordy") <= 3, served  # the rule moved over
        est = router.route(MSG).est_cost_usd
        assert est["wordy::sim-1"] > listed["terse::sim-1"] > est["terse::sim-1"]  # terse answers: below list
        between = {**MSG, "max_cost_usd": (est["wordy::sim-1"] + est["terse::sim-1"]) / 2}
        capped = router.route(between)  # the ceiling reads the learned estimates too
        assert capped.provider == "terse"
        assert "exceeds the request's ceiling" in capped.excluded["wordy::sim-1"]
        worst = router.route({**MSG, "max_tokens": 100}).est_cost_usd
        assert worst == pytest.approx({"wordy::sim-1": in_cost + 100 * 1.5 / 1e6,
                                       "terse::sim-1": in_cost + 100 * 2.0 / 1e6})
