"""The learned policy inside the router: cold start falls back to the rules and says so, online feedback
makes it ready, it only picks eligible arms, logs full propensities, and a broken state never fails a request."""

from __future__ import annotations

import json

import numpy as np
import pytest

from learned_router import Router
from learned_router.sim_fleet import SimFleet
from learned_router.simulator import SimProfile

CODE = {"messages": [{"role": "user", "content": "Write a Python function that reverses a linked list."}]}


@pytest.fixture(scope="module")
def fleet():
    with SimFleet([SimProfile("good", default_quality=0.9, price_in_per_mtok=1, price_out_per_mtok=1),
                   SimProfile("poor", default_quality=0.3, price_in_per_mtok=1, price_out_per_mtok=1)]) as f:
        yield f


def config(fleet, **routing):
    return {
        "providers": [fleet.provider_entry("good", quality_prior=0.5), fleet.provider_entry("poor", quality_prior=0.5)],
        "routing": {"strategy": "learned", "fallback_strategy": "cost", **routing},
        "embedder": {"kind": "hashing"},
    }


@pytest.mark.parametrize("seed", range(3))
def test_cold_start_falls_back_then_learns_from_feedback(fleet, seed):
    router = Router.from_config(config(fleet), seed=seed)
    d = router.route(CODE)
    assert d.strategy == "cost" and "cold start" in (d.fallback_reason or "")
    rng = np.random.default_rng(seed)
    for _ in range(30):  # feedback on whichever arm served (cost ties: the rules pick one; force both)
        for arm in ("good", "poor"):
            c = router.complete({**CODE, "model": arm})
            q = float(np.clip(rng.normal(0.9 if arm == "good" else 0.3, 0.05), 0, 1))
            assert router.feedback(c.request_id, q)
    picks = [router.route(CODE) for _ in range(40)]
    assert all(p.strategy == "learned" and p.fallback_reason is None for p in picks)
    assert sum(p.provider == "good" for p in picks) >= 36
    p = picks[0]
    assert set(p.propensities) == {"good::sim-1", "poor::sim-1"}
    assert sum(p.propensities.values()) == pytest.approx(1.0)
    router.close()


def test_learned_policy_respects_guardrails(fleet):
    router = Router.from_config(config(fleet), seed=0)
    for _ in range(30):
        c = router.complete({**CODE, "model": "good"})
        router.feedback(c.request_id, 0.95)
    router.breaker.record_failure("good::sim-1")
    for _ in range(4):
        router.breaker.record_failure("good::sim-1")
    d = router.route(CODE)
    assert d.ranking == ("poor::sim-1",) and d.propensities == {"poor::sim-1": 1.0}
    router.close()


def test_corrupt_state_falls_back_without_failing(fleet, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "policy_state.json").write_text(json.dumps({"kind": "thompson", "version": 999}))
    router = Router.from_config(config(fleet, model_path=str(model)))
    c = router.complete(CODE)
    assert c.decision.strategy == "cost" and c.decision.fallback_reason
    router.close()
