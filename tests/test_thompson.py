"""ThompsonStrategy: ranking, propensities, cold start, exploration cap, persistence."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from learned_router.config import ProviderConfig
from learned_router.errors import PolicyStateError
from learned_router.strategies.base import ArmView, Context, Features, Strategy
from learned_router.strategies.thompson import (
    MANIFEST_FILE,
    STATE_FILE,
    ThompsonStrategy,
    fit_thompson,
    load_learned_strategy,
)
from learned_router.types import ArmId, ChatRequest, Weights

ARMS = ("cheap::small", "mid::medium", "big::large")
PRICES = {"cheap::small": 0.01, "mid::medium": 5.0, "big::large": 10.0}


def _view(arm: str, prior: float = 0.5, cost_usd: float | None = None) -> ArmView:
    provider, model = arm.split("::")
    cfg = ProviderConfig(name=provider, kind="openai", base_url="http://127.0.0.1:1", model=model,
                         price_in_per_mtok=PRICES.get(arm, 1.0), price_out_per_mtok=PRICES.get(arm, 1.0),
                         quality_prior=prior)
    cost = PRICES.get(arm, 1.0) * 500 / 1e6 if cost_usd is None else cost_usd
    return ArmView(arm=ArmId(arm), provider=cfg, quality=prior, latency_s=1.0, availability=1.0, in_flight=0,
                   est_cost_usd=cost)


def _features(emb: np.ndarray, tokens: int = 100) -> Features:
    return Features(input_tokens=tokens, output_tokens_est=200, embedding=emb.astype(np.float32))


def _ctx(features: Features, cost: float = 0.0) -> Context:
    return Context(request=ChatRequest(messages=({"role": "user", "content": "hi"},)), features=features,
                   weights=Weights(quality=1.0, cost=cost, latency=0.0))


def _trained(seed: int = 0, n: int = 600) -> tuple[ThompsonStrategy, np.ndarray]:
    """Two clusters of prompts: on cluster A only the big model is right, on cluster B all are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, 16))
    group = rng.integers(0, 2, n)
    E = centres[group] + 0.1 * rng.normal(size=(n, 16))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    rows, arms, rewards = [], [], []
    for i in range(n):
        for a in range(3):
            p = (0.1, 0.3, 0.95)[a] if group[i] == 0 else 0.9
            rows.append(i)
            arms.append(a)
            rewards.append(float(rng.random() < p))
    idx = np.array(rows)
    strat = fit_thompson(E[idx], np.full(len(idx), 100), ARMS, arms, rewards, n_components=4, alpha=1.0,
                         scale=0.5, version="test-1")
    return strat, np.vstack([E[group == 0][:1], E[group == 1][:1]])


def test_is_a_strategy_and_ready_after_fit() -> None:
    strat, _ = _trained()
    assert isinstance(strat, Strategy)
    assert strat.ready
    assert not ThompsonStrategy().ready


@pytest.mark.parametrize("seed", range(20))
def test_routes_hard_prompts_to_the_big_model_and_easy_ones_cheaply(seed: int) -> None:
    strat, (hard, easy) = _trained(seed)
    views = [_view(a) for a in ARMS]
    rng = np.random.default_rng(seed)
    hard = [strat.select(_ctx(_features(hard), cost=0.05), views, rng) for _ in range(30)]
    easy = [strat.select(_ctx(_features(easy), cost=0.05), views, rng) for _ in range(30)]
    # The policy's own probabilities, then the arms it actually drew from them (30 draws: a loose bound).
    assert np.mean([r.propensities["big::large"] for r in hard]) >= 0.9
    assert np.mean([r.propensities["cheap::small"] for r in easy]) >= 0.75
    assert [r.arms[0] for r in hard].count(ArmId("big::large")) >= 22
    assert [r.arms[0] for r in easy].count(ArmId("cheap::small")) >= 18


def test_ranking_is_a_permutation_with_propensities_summing_to_one() -> None:
    strat, (hard, _) = _trained()
    views = [_view(a) for a in ARMS]
    ranking = strat.select(_ctx(_features(hard)), views, np.random.default_rng(0))
    assert sorted(ranking.arms) == sorted(ARMS)
    assert sum(ranking.propensities.values()) == pytest.approx(1.0)
    assert set(ranking.propensities) == set(ARMS)
    assert ranking.info["version"] == "test-1"


def test_propensities_match_first_arm_frequencies() -> None:
    strat, (hard, easy) = _trained()
    mixed = (hard + easy) / np.linalg.norm(hard + easy)
    views = [_view(a) for a in ARMS]
    rng = np.random.default_rng(5)
    ctx = _ctx(_features(mixed), cost=0.3)
    firsts, props = [], []
    for _ in range(3000):
        r = strat.select(ctx, views, rng)
        firsts.append(r.arms[0])
        props.append([r.propensities[a] for a in ARMS])
    freq = np.array([firsts.count(ArmId(a)) / len(firsts) for a in ARMS])
    assert np.abs(freq - np.mean(props, axis=0)).max() < 0.03


def test_select_does_not_mutate_state() -> None:
    strat, (hard, _) = _trained()
    before = copy.deepcopy(strat.to_state())
    views = [_view(a) for a in ARMS] + [_view("new::model", prior=0.7)]
    for seed in range(20):
        strat.select(_ctx(_features(hard), cost=0.1), views, np.random.default_rng(seed))
    assert strat.to_state() == before


def test_unknown_arm_starts_from_its_config_prior_and_learns() -> None:
    strat, (hard, _) = _trained()
    views = [_view("new::model", prior=0.77)]
    mean, _ = strat.posterior(_features(hard), views)
    assert mean[0] == pytest.approx(0.77)
    for _ in range(200):
        strat.update(ArmId("new::model"), _features(hard), 0.0)
    mean, _ = strat.posterior(_features(hard), views)
    assert mean[0] < 0.2


def test_exploration_cap_limits_low_quality_arms() -> None:
    strat = ThompsonStrategy(quality_floor=0.6, exploration_cap=0.05, min_observations=0)
    views = [_view("a::low", prior=0.55, cost_usd=0.0), _view("b::high", prior=0.65, cost_usd=0.0)]
    ranking = strat.select(_ctx(_features(np.ones(4) / 2)), views, np.random.default_rng(0))
    assert ranking.propensities["a::low"] <= 0.05 + 1e-12
    uncapped = ThompsonStrategy(min_observations=0).select(_ctx(_features(np.ones(4) / 2)), views,
                                                           np.random.default_rng(0))
    assert uncapped.propensities["a::low"] > 0.2


def test_save_load_round_trip(tmp_path: Path) -> None:
    strat, (hard, _) = _trained()
    strat.save(tmp_path / "policy")
    back = ThompsonStrategy.load(tmp_path / "policy")
    views = [_view(a) for a in ARMS]
    a = strat.select(_ctx(_features(hard), 0.1), views, np.random.default_rng(9))
    b = back.select(_ctx(_features(hard), 0.1), views, np.random.default_rng(9))
    assert a.arms == b.arms
    assert a.propensities == pytest.approx(b.propensities)
    assert a.scores == pytest.approx(b.scores)
    manifest = json.loads((tmp_path / "policy" / MANIFEST_FILE).read_text())
    assert manifest["arms"] == list(ARMS)


def test_corrupt_files_raise_and_the_configured_loader_falls_back(tmp_path: Path) -> None:
    strat, _ = _trained()
    folder = strat.save(tmp_path / "policy")
    state = json.loads((folder / STATE_FILE).read_text())
    state["model"]["A"][0][0][0] = float("nan")
    (folder / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(PolicyStateError):
        ThompsonStrategy.load(folder)

    class _Cfg:
        providers = [_view(a).provider for a in ARMS]

        class routing:  # noqa: N801
            exploration = True

    loaded = load_learned_strategy(folder, _Cfg())
    assert not loaded.ready and loaded.error
    with pytest.raises(PolicyStateError):
        ThompsonStrategy.load(tmp_path / "missing")


def test_wrong_embedding_size_is_an_error_not_a_guess() -> None:
    strat, _ = _trained()
    with pytest.raises(ValueError):
        strat.select(_ctx(_features(np.ones(8) / np.sqrt(8))), [_view(a) for a in ARMS], np.random.default_rng(0))
