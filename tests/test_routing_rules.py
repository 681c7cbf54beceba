"""Rule strategies and guardrails through the public API (no provider is called by ``route``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from learned_router import NoEligibleArmError, RequestError, Router
from learned_router.errors import BudgetExceededError
from learned_router.testing import FakeClock

MSG = {"messages": [{"role": "user", "content": "Write a haiku about routers."}]}


def two_providers(gpt35_quality: float = 0.85, strategy: str = "balanced") -> dict:
    """The original design's test: gpt-4 at $0.03/1k tokens, gpt-3.5 at $0.002/1k."""
    return {
        "providers": [
            {"name": "gpt-4", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-4",
             "price_in_per_mtok": 30.0, "price_out_per_mtok": 30.0, "quality_prior": 0.95,
             "latency_prior_s": 0.2},
            {"name": "gpt-3.5", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-3.5-turbo",
             "price_in_per_mtok": 2.0, "price_out_per_mtok": 2.0, "quality_prior": gpt35_quality,
             "latency_prior_s": 0.15},
        ],
        "routing": {"strategy": strategy},
    }


@pytest.mark.parametrize(
    ("strategy", "q35", "expected"),
    [("cost", 0.85, "gpt-3.5"), ("quality", 0.85, "gpt-4"), ("latency", 0.85, "gpt-3.5"), ("cost", 0.7, "gpt-4")],
)
def test_rule_strategies_pick_as_designed(strategy, q35, expected):
    d = Router.from_config(two_providers(q35, strategy)).route(MSG)
    assert d.provider == expected
    assert d.strategy == strategy
    assert set(d.ranking) == {"gpt-4::gpt-4", "gpt-3.5::gpt-3.5-turbo"}
    assert d.propensities[d.arm] == 1.0


def test_route_cli_json(tmp_path: Path):
    cfg = tmp_path / "r.yaml"
    for strategy, q35, expected in [("cost", 0.85, "gpt-3.5"), ("quality", 0.85, "gpt-4"), ("cost", 0.7, "gpt-4")]:
        cfg.write_text(yaml.safe_dump(two_providers(q35, strategy)))
        out = subprocess.run(
            [sys.executable, "-m", "learned_router", "route", "--config", str(cfg), "--json", "Hello there"],
            capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        data = json.loads(out.stdout)
        assert data["provider"] == expected and data["strategy"] == strategy
        assert {"provider", "model", "strategy", "ranking"} <= set(data)


def test_route_cli_reports_config_errors(tmp_path: Path):
    cfg = tmp_path / "r.yaml"
    bad = two_providers()
    bad["routing"]["strategy"] = "fastest"
    cfg.write_text(yaml.safe_dump(bad))
    out = subprocess.run([sys.executable, "-m", "learned_router", "route", "--config", str(cfg), "hi"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "routing.strategy" in out.stderr and "Traceback" not in out.stderr


def test_balanced_score_and_weights():
    cfg = two_providers(strategy="balanced")
    d = Router.from_config(cfg).route(MSG)
    # price is the blended $ per million tokens: gpt-4 30, gpt-3.5 2
    assert d.scores["gpt-4::gpt-4"] == pytest.approx(0.4 * 0.95 + 0.3 / 31 + 0.3 / 1.2)
    assert d.scores["gpt-3.5::gpt-3.5-turbo"] == pytest.approx(0.4 * 0.85 + 0.3 / 3 + 0.3 / 1.15)
    assert d.provider == "gpt-3.5"
    cfg["routing"]["balanced_weights"] = {"quality": 1.0, "cost": 0.0, "latency": 0.0}
    assert Router.from_config(cfg).route(MSG).provider == "gpt-4"


def test_task_strategy_prefers_configured_models():
    cfg = two_providers(strategy="task")
    cfg["routing"]["task_preferences"] = {"code": ["gpt-4"], "chat": ["gpt-3.5"]}
    r = Router.from_config(cfg)
    assert r.route({**MSG, "task_hint": "code"}).provider == "gpt-4"
    assert r.route({**MSG, "task_hint": "chat"}).provider == "gpt-3.5"


def test_per_task_quality_table_drives_cost_strategy():
    cfg = two_providers(strategy="cost")
    cfg["providers"][1]["tasks"] = {"math": 0.5, "code": 0.9}
    r = Router.from_config(cfg)
    assert r.route({**MSG, "task_hint": "math"}).provider == "gpt-4"
    assert r.route({**MSG, "task_hint": "chat"}).provider == "gpt-3.5"
    assert r.route({**MSG, "task_hint": "code"}).provider == "gpt-3.5"
    for _ in range(10):  # live feedback drags gpt-3.5 down: even its specialty falls under the threshold
        r.stats.record_quality("gpt-3.5::gpt-3.5-turbo", 0.6)
    assert r.route({**MSG, "task_hint": "code"}).provider == "gpt-4"


def test_required_and_preferred_region():
    cfg = two_providers(strategy="quality")
    cfg["providers"][0]["region"] = "us"
    cfg["providers"][1]["region"] = "eu"
    r = Router.from_config(cfg)
    d = r.route({**MSG, "region": "eu"})
    assert d.provider == "gpt-3.5" and d.ranking == ("gpt-3.5::gpt-3.5-turbo",)
    assert "required region eu" in d.excluded["gpt-4::gpt-4"]
    with pytest.raises(NoEligibleArmError) as info:
        r.route({**MSG, "region": "ap"})
    assert set(info.value.reasons) == {"gpt-4::gpt-4", "gpt-3.5::gpt-3.5-turbo"}
    cfg["providers"][1]["quality_prior"] = 0.95  # a tie on quality: the preferred region wins it
    r = Router.from_config(cfg)
    assert r.route({**MSG, "prefer_region": "eu"}).provider == "gpt-3.5"
    assert r.route({**MSG, "prefer_region": "us"}).provider == "gpt-4"


def test_context_window_and_cost_ceiling_exclude():
    cfg = two_providers(strategy="quality")
    cfg["providers"][0]["max_context_tokens"] = 1000
    r = Router.from_config(cfg)
    long = {"messages": [{"role": "user", "content": "x" * 8000}]}
    d = r.route(long)
    assert d.provider == "gpt-3.5" and "context window 1000" in d.excluded["gpt-4::gpt-4"]
    d = r.route({**MSG, "max_cost_usd": 0.001})
    assert d.provider == "gpt-3.5" and "ceiling" in d.excluded["gpt-4::gpt-4"]


def test_availability_excludes_and_heals():
    clock = FakeClock()
    cfg = two_providers(strategy="quality")
    cfg["routing"]["availability_min_calls"] = 0
    r = Router.from_config(cfg, clock=clock)
    r.stats.record_error("gpt-4::gpt-4")
    assert r.route(MSG).provider == "gpt-4"  # 0.95 is not below 0.95
    r.stats.record_error("gpt-4::gpt-4")
    d = r.route(MSG)
    assert d.provider == "gpt-3.5" and "availability 0.902" in d.excluded["gpt-4::gpt-4"]
    clock.advance(60)  # two half-lives without traffic: the shortfall quarters
    assert r.route(MSG).provider == "gpt-4"


def test_breaker_open_excludes_and_every_reason_is_listed():
    clock = FakeClock()
    cfg = two_providers(strategy="quality")
    cfg["breaker"] = {"failure_threshold": 1, "reset_timeout_s": 5}
    r = Router.from_config(cfg, clock=clock)
    for arm in ("gpt-4::gpt-4", "gpt-3.5::gpt-3.5-turbo"):
        r.breaker.record_failure(arm)
    with pytest.raises(NoEligibleArmError, match="gpt-3.5::gpt-3.5-turbo: circuit breaker open; gpt-4::gpt-4: circuit breaker open") as info:
        r.route(MSG)
    assert all("circuit breaker open" in why for why in info.value.reasons.values())
    clock.advance(5)
    assert r.route(MSG).provider == "gpt-4"


def test_presets_pinning_and_unknown_model():
    cfg = two_providers(strategy="quality")
    cfg["routing"]["presets"] = {"auto-cheap": {"strategy": "cost"}}
    r = Router.from_config(cfg)
    assert r.route({**MSG, "model": "auto"}).provider == "gpt-4"
    assert r.route({**MSG, "model": "auto-cheap"}).provider == "gpt-3.5"
    d = r.route({**MSG, "model": "gpt-3.5"})
    assert d.ranking == ("gpt-3.5::gpt-3.5-turbo",)
    assert r.route({**MSG, "model": "gpt-4::gpt-4"}).provider == "gpt-4"
    with pytest.raises(RequestError, match="unknown model 'gpt-5'"):
        r.route({**MSG, "model": "gpt-5"})


def test_provider_and_tenant_budgets():
    cfg = two_providers(strategy="quality")
    cfg["budgets"] = {"providers": {"gpt-4": 0.0}, "tenants": {"acme": 0.0}}
    r = Router.from_config(cfg)
    d = r.route(MSG)
    assert d.provider == "gpt-3.5" and "over its budget" in d.excluded["gpt-4::gpt-4"]
    with pytest.raises(BudgetExceededError, match="tenant 'acme'"):
        r.route({**MSG, "tenant": "acme"})


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": "hi"}, "messages"),
        ({**MSG, "weights": {"speed": 1}}, "weights"),
        ({**MSG, "weights": {"cost": -1}}, "weights.cost"),
        ({**MSG, "max_tokens": 0}, "max_tokens"),
        ({**MSG, "colour": "red"}, "colour"),
    ],
)
def test_malformed_requests_name_the_field(request_, field):
    with pytest.raises(RequestError) as info:
        Router.from_config(two_providers()).route(request_)
    assert info.value.field == field


@pytest.mark.parametrize("seed", range(5))
def test_epsilon_exploration_logs_exact_propensities(seed):
    cfg = two_providers(strategy="quality")
    cfg["routing"]["exploration_epsilon"] = 0.2
    r = Router.from_config(cfg, seed=seed)
    picks = [r.route(MSG) for _ in range(2000)]
    p = picks[0].propensities
    assert p == {"gpt-4::gpt-4": pytest.approx(0.9), "gpt-3.5::gpt-3.5-turbo": pytest.approx(0.1)}
    share = sum(d.provider == "gpt-3.5" for d in picks) / len(picks)
    assert abs(share - 0.1) < 0.03
    assert all(set(d.ranking) == {"gpt-4::gpt-4", "gpt-3.5::gpt-3.5-turbo"} for d in picks)


def test_example_config_from_the_readme_routes_without_keys():
    root = Path(__file__).resolve().parent.parent
    router = Router.from_config(root / "examples" / "router.yaml", log=False)
    d = router.route({**MSG, "region": "eu"})
    assert d.provider in {"gemini-flash", "local-llama"}
    assert all("required region eu" in why for arm, why in d.excluded.items())
    code = router.route({**MSG, "strategy": "task", "task_hint": "code"})
    # the providers listed for code lead, ordered by the balanced score among them
    assert set(code.ranking[:2]) == {"claude-sonnet::claude-sonnet-4-5", "gpt-4o::gpt-4o"}
    assert router.route({**MSG, "model": "auto-cheap"}).strategy == "cost"
