"""LinearTS: learning, propensities, forgetting and state validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from learned_router.errors import PolicyStateError
from learned_router.strategies.linear_ts import ContextTransform, LinearTS

SEEDS = range(20)


def _contexts(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return np.hstack([np.ones((n, 1)), rng.normal(size=(n, d - 1))])


@pytest.mark.parametrize("seed", SEEDS)
def test_thompson_sampling_learns_the_better_arm_per_context(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d, k = 4, 3
    theta = np.array([[0.5, 0.3, 0.0, 0.0], [0.5, -0.3, 0.0, 0.0], [0.3, 0.0, 0.0, 0.0]])
    model = LinearTS(k, d, [0.5] * k, alpha=1.0, scale=0.3)
    chosen_best = []
    for t in range(1000):
        x = _contexts(rng, 1, d)[0]
        a = int(np.argmax(model.sample(x, rng)))
        reward = float(rng.random() < np.clip(theta[a] @ x, 0, 1))
        model.partial_fit(a, x, reward)
        if t >= 600:
            chosen_best.append(a == int(np.argmax(theta @ x)))
    # the best arm depends on the sign of x[1]; a context-blind policy gets about half right
    assert np.mean(chosen_best) > 0.8
    assert model.mean(np.array([1.0, 1.0, 0, 0]))[0] > model.mean(np.array([1.0, 1.0, 0, 0]))[1]
    assert model.mean(np.array([1.0, -1.0, 0, 0]))[1] > model.mean(np.array([1.0, -1.0, 0, 0]))[0]


def test_batch_fit_equals_sequential_updates() -> None:
    rng = np.random.default_rng(1)
    X = _contexts(rng, 200, 5)
    arms = rng.integers(0, 3, size=200)
    r = rng.random(200)
    seq = LinearTS(3, 5, [0.2, 0.5, 0.8], alpha=2.0)
    for x, a, y in zip(X, arms, r, strict=True):
        seq.partial_fit(int(a), x, float(y))
    batch = LinearTS(3, 5, [0.2, 0.5, 0.8], alpha=2.0).fit(X, arms, r)
    assert np.allclose(seq.mean(X), batch.mean(X))
    full = LinearTS(3, 5, [0.2, 0.5, 0.8], alpha=2.0).fit_full(X, np.tile(r[:, None], 3))
    again = LinearTS(3, 5, [0.2, 0.5, 0.8], alpha=2.0).fit(np.repeat(X, 3, 0), np.tile(np.arange(3), 200),
                                                              np.repeat(r, 3))
    assert np.allclose(full.mean(X), again.mean(X))


def test_prior_is_the_mean_before_any_evidence() -> None:
    model = LinearTS(3, 4, [0.2, 0.5, 0.9])
    assert np.allclose(model.mean(np.array([1.0, 0.3, -2.0, 1.0])), [0.2, 0.5, 0.9])


@pytest.mark.parametrize("seed", SEEDS)
def test_propensities_sum_to_one_and_match_sampling_frequencies(seed: int) -> None:
    rng = np.random.default_rng(seed)
    model = LinearTS(4, 3, [0.5, 0.55, 0.6, 0.4], alpha=1.0, scale=0.3)
    x = np.array([1.0, 0.2, -0.1])
    offsets = np.array([0.0, -0.02, -0.08, 0.05])
    props = model.propensities(x, offsets, rng, n_draws=4000)
    assert props.sum() == pytest.approx(1.0)
    counts = np.bincount([int(np.argmax(model.sample(x, rng) + offsets)) for _ in range(4000)], minlength=4)
    assert np.abs(counts / 4000 - props).max() < 0.04


def test_forgetting_follows_drift() -> None:
    rng = np.random.default_rng(0)
    x = np.array([1.0])
    keep, forget = LinearTS(1, 1, [0.5]), LinearTS(1, 1, [0.5], forgetting=0.98)
    for t in range(2000):
        r = float(rng.random() < (0.9 if t < 1000 else 0.1))
        keep.partial_fit(0, x, r)
        forget.partial_fit(0, x, r)
    assert forget.mean(x)[0] < 0.2 < keep.mean(x)[0]


def test_state_round_trips_through_json() -> None:
    rng = np.random.default_rng(3)
    model = LinearTS(3, 4, [0.1, 0.2, 0.3], alpha=0.5, scale=0.4, forgetting=0.99)
    X = _contexts(rng, 50, 4)
    model.fit(X, rng.integers(0, 3, 50), rng.random(50))
    back = LinearTS.from_state(json.loads(json.dumps(model.to_state())))
    assert np.allclose(back.mean(X), model.mean(X))
    assert np.allclose(back.std(X[0]), model.std(X[0]))
    assert (back.alpha, back.scale, back.forgetting) == (0.5, 0.4, 0.99)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: s.update(version=99),
        lambda s: s.update(kind="other"),
        lambda s: s.pop("A"),
        lambda s: s.update(A=s["A"][:-1]),
        lambda s: s.update(b=[[float("nan")] * 4] * 3),
        lambda s: s.update(A=[[[0.0] * 4] * 4] * 3),
        lambda s: s.update(alpha=-1.0),
        lambda s: s.update(priors="x"),
    ],
)
def test_corrupt_state_raises_policy_state_error(corrupt) -> None:  # type: ignore[no-untyped-def]
    state = LinearTS(3, 4, [0.1, 0.2, 0.3]).to_state()
    corrupt(state)
    with pytest.raises(PolicyStateError):
        LinearTS.from_state(state)


def test_context_transform_centres_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    E = rng.normal(size=(100, 16))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    tokens = rng.integers(5, 500, 100)
    T = rng.dirichlet(np.ones(3), 100)
    tr = ContextTransform(4, task_labels=("a", "b", "c")).fit(E, tokens, T)
    X = tr.transform(E, tokens, T)
    assert X.shape == (100, tr.dim) == (100, 1 + 4 + 3 + 1)
    assert np.allclose(X[:, 0], 1.0)
    assert np.allclose(X[:, 1:].mean(axis=0), 0.0, atol=1e-9)
    back = ContextTransform.from_state(json.loads(json.dumps(tr.to_state())))
    one = back.transform_one(E[0], int(tokens[0]), dict(zip("abc", T[0], strict=True)))
    assert np.allclose(one, X[0])
    with pytest.raises(PolicyStateError):
        ContextTransform.from_state({**tr.to_state(), "scales": [1.0]})


def test_cluster_memberships_are_centred_and_round_trip() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16))
    E = centres[rng.integers(0, 3, 90)] + 0.05 * rng.normal(size=(90, 16))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    tokens = rng.integers(5, 500, 90)
    tr = ContextTransform(2, n_clusters=3, temperature=0.05).fit(E, tokens)
    X = tr.transform(E, tokens)
    assert X.shape == (90, 1 + 2 + 3 + 1)
    assert np.allclose(X[:, 3:6].mean(axis=0), 0.0, atol=1e-9)
    back = ContextTransform.from_state(json.loads(json.dumps(tr.to_state())))
    assert np.allclose(back.transform(E, tokens), X)
    # the fused per-request path gives the batch path's rows, and follows a refit
    assert all(np.allclose(back.transform_one(E[i], int(tokens[i])), X[i]) for i in range(0, 90, 7))
    tr.fit(E[::-1][:60], tokens[:60])
    assert np.allclose(tr.transform_one(E[5], int(tokens[5])), tr.transform(E[5:6], tokens[5:6])[0])
