"""A/B experiments: sticky weighted assignment and the report's intervals and always-valid verdicts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from learned_router.config import ExperimentConfig
from learned_router.experiments import ab_report, assign, make_assigner, msprt, print_ab_report, unit_key
from learned_router.stores import DecisionRecord, MemoryDecisionLog
from learned_router.types import ChatRequest


def _exp(unit: str = "session", weights: tuple[float, float] = (90, 10)) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"name": "learned-vs-rules", "unit": unit, "variants": [
        {"name": "learned", "weight": weights[0], "strategy": "learned"},
        {"name": "control", "weight": weights[1], "strategy": "balanced"}]})


def _req(**kw: str) -> ChatRequest:
    return ChatRequest.coerce({"messages": [{"role": "user", "content": "hi"}], **kw})


def test_assignment_is_sticky_per_unit():
    exp = _exp("session")
    first = {f"s{i}": assign(exp, unit_key(exp, _req(session_id=f"s{i}")))[0] for i in range(200)}
    for i in range(200):
        again = assign(exp, unit_key(exp, _req(session_id=f"s{i}", request_id=f"other{i}")))[0]
        assert again == first[f"s{i}"]
    tenant_exp = _exp("tenant")
    assert unit_key(tenant_exp, _req(tenant="acme", session_id="x")) == "acme"
    assert unit_key(tenant_exp, _req(request_id="r9")) == "r9"  # no tenant: per request


def test_assignment_follows_the_weights():
    exp = _exp(weights=(90, 10))
    names = [assign(exp, f"unit-{i}") for i in range(20_000)]
    share = np.mean([n == "learned" for n, _ in names])
    assert abs(share - 0.9) < 4 * np.sqrt(0.9 * 0.1 / 20_000)
    assert all(p == pytest.approx(0.9 if n == "learned" else 0.1) for n, p in names)


def test_assigner_gives_the_variant_strategy():
    assigner = make_assigner([_exp()])
    a = assigner(_req(session_id="abc"))
    assert a.experiment == "learned-vs-rules"
    assert a.strategy == ("learned" if a.variant == "learned" else "balanced")
    assert make_assigner([])(_req()) is None


def _log(seed: int, n: int = 2000, lift: float = 0.0) -> MemoryDecisionLog:
    rng = np.random.default_rng(seed)
    store = MemoryDecisionLog()
    for i in range(n):
        variant = "learned" if rng.random() < 0.5 else "control"
        q = float(rng.random() < 0.6 + (lift if variant == "learned" else 0.0))
        store.append(DecisionRecord(
            request_id=f"r{i}", ts=float(i), experiment="exp", variant=variant, assignment_p=0.5,
            chosen_arm="a::m", served_arm="a::m", cost_usd=0.001 if variant == "learned" else 0.002,
            latency_s=float(rng.exponential(1.0)), quality=q, weights={"quality": 1.0, "cost": 0.05, "latency": 0.0}))
    return store


def test_report_detects_a_real_difference():
    rep = ab_report(_log(0, n=4000, lift=0.15))["experiments"]["exp"]
    assert rep["control"] == "control"
    assert rep["variants"]["learned"]["requests"] + rep["variants"]["control"]["requests"] == 4000
    q = rep["comparisons"]["learned"]["quality"]
    assert q["verdict"] == "variant better"
    assert q["ci_low"] < 0.15 < q["ci_high"]
    assert q["sequential"]["cs_low"] <= q["ci_low"]  # the always-valid interval is wider
    assert rep["comparisons"]["learned"]["cost_usd"]["verdict"] == "variant better"  # cheaper is better


def test_aa_tests_rarely_claim_a_difference():
    conclusive = sum(ab_report(_log(seed, n=1500))["experiments"]["exp"]["comparisons"]["learned"]["quality"]
                     ["verdict"] != "inconclusive" for seed in range(20))
    assert conclusive <= 2


def test_msprt_boundary_shrinks_with_evidence():
    _, wide = msprt(0.0, 0.01, tau=0.1)
    _, narrow = msprt(0.0, 0.0001, tau=0.1)
    assert narrow < wide
    lam, _ = msprt(0.5, 0.0001, tau=0.1)
    assert lam > 20


def test_report_renders_and_handles_empty_logs():
    buf = io.StringIO()
    print_ab_report(ab_report(_log(1, n=300, lift=0.1)), console=Console(file=buf, width=200))
    assert "learned" in buf.getvalue() and "verdict" in buf.getvalue()
    empty = ab_report(MemoryDecisionLog())
    assert empty["experiments"] == {}
    buf = io.StringIO()
    print_ab_report(empty, console=Console(file=buf))
    assert "No experiment" in buf.getvalue()
