"""Off-policy estimators on a synthetic contextual bandit whose true policy values are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from learned_router.ope import doubly_robust, effective_sample_size, evaluate_all, ips, snips

SEEDS = range(20)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _bandit(seed: int, n: int = 3000, k: int = 4):
    """Contexts x, mean rewards m(x, a) in [0, 1], a logging and a different target policy, Bernoulli rewards."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    theta = np.random.default_rng(1234).normal(size=(3, k))
    means = 1 / (1 + np.exp(-(x @ theta)))
    logging = _softmax(0.3 * x @ theta)  # explores every arm
    target = _softmax(3.0 * x @ theta)  # greedier: prefers the better arms
    actions = np.minimum((logging.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1), k - 1)
    rows = np.arange(n)
    rewards = (rng.random(n) < means[rows, actions]).astype(float)
    truth = float((target * means).sum(axis=1).mean())  # the target's exact value on these contexts
    noisy_model = np.clip(means + rng.normal(0, 0.1, size=means.shape), 0, 1)  # an imperfect reward model
    return rewards, logging[rows, actions], actions, target, noisy_model, logging, truth


@pytest.mark.parametrize("seed", SEEDS)
def test_estimators_cover_the_true_value(seed):
    r, mu, a, target, model, logging, truth = _bandit(seed)
    est = evaluate_all(r, mu, a, target, model, logged_probs=logging)
    for name, e in est.items():
        assert e.n == len(r) and e.ci_low < e.value < e.ci_high
        # a 4-standard-error band: a miss would mean a broken estimator, not bad luck (p < 1e-4)
        assert abs(e.value - truth) < 4 * e.stderr, (name, e.value, truth, e.stderr)
        assert e.reliable, e.warnings


def test_estimators_are_unbiased_and_cover_across_seeds():
    errors = {"ips": [], "snips": [], "dr": []}
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for seed in SEEDS:
        r, mu, a, target, model, logging, truth = _bandit(seed)
        for name, e in evaluate_all(r, mu, a, target, model).items():
            errors[name].append(e.value - truth)
            covered[name] += e.ci_low <= truth <= e.ci_high
    for name, errs in errors.items():
        errs_a = np.asarray(errs)
        assert abs(errs_a.mean()) < 3 * errs_a.std(ddof=1) / np.sqrt(len(errs_a)) + 1e-3, name
        assert covered[name] >= 16, (name, covered[name])
    # a decent reward model makes DR more precise than plain IPS
    assert np.sqrt(np.mean(np.square(errors["dr"]))) < np.sqrt(np.mean(np.square(errors["ips"])))


def test_identical_policies_give_the_observed_mean():
    rng = np.random.default_rng(0)
    r = rng.random(500)
    p = rng.uniform(0.2, 1.0, 500)
    assert ips(r, p, p).value == pytest.approx(r.mean())
    assert snips(r, p, p).value == pytest.approx(r.mean())
    assert effective_sample_size(np.ones(500)) == pytest.approx(500)


def test_warns_on_tiny_propensities_and_low_ess():
    r = np.ones(200)
    mu = np.full(200, 0.5)
    mu[:3] = 0.001
    pi = np.full(200, 0.5)
    est = ips(r, mu, pi)
    assert not est.reliable
    assert any("below 0.01" in w for w in est.warnings)
    assert any("effective sample size" in w for w in est.warnings)
    assert est.max_weight == pytest.approx(500)


def test_dr_flags_unsupported_target_arms():
    n = 100
    target = np.tile([0.0, 1.0], (n, 1))
    logging = np.tile([1.0, 0.0], (n, 1))
    est = doubly_robust(np.ones(n), np.ones(n), np.zeros(n, dtype=int), target, np.full((n, 2), 0.5),
                        logged_probs=logging)
    assert est.value == pytest.approx(0.5)
    assert any("never plays" in w for w in est.warnings)


def test_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="one value per decision"):
        ips([1, 0], [0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="zero propensity"):
        snips([1.0], [0.0], [1.0])
    with pytest.raises(ValueError, match="no logged decisions"):
        ips([], [], [])
