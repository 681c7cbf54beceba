"""The compiled per-request kernels give the numbers of the numpy code they stand in for."""

from __future__ import annotations

import numpy as np
import pytest

from learned_router import _kernels
from learned_router.strategies.linear_ts import LinearTS


def _fitted_model(rng: np.random.Generator, k: int = 6, d: int = 9) -> LinearTS:
    X = np.hstack([np.ones((300, 1)), rng.normal(size=(300, d - 1))])
    arms = rng.integers(0, k, 300)
    rewards = rng.random(300)
    return LinearTS(k, d, rng.random(k), alpha=2.0, scale=0.3).fit(X, arms, rewards)


def _run(model: LinearTS, x, idx, cold, offsets, normals, n_draws, pick, w_quality=1.5, with_std=True):  # type: ignore[no-untyped-def]
    k = len(idx)
    mean, std, scores = np.empty(k), np.empty(k), np.empty(k)
    counts, order = np.empty(k, np.int64), np.empty(k, np.int64)
    first = _kernels.sample_utilities(x, model.mu_, model.Ainv_, np.asarray(idx, np.int64), np.asarray(cold, float),
                                      model.alpha, model.scale, w_quality, np.asarray(offsets, float), normals,
                                      n_draws, pick, with_std, mean, std, counts, scores, order)
    return int(first), mean, std, counts, scores, order


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sample_utilities_matches_the_numpy_posterior_and_monte_carlo(seed: int) -> None:
    rng = np.random.default_rng(seed)
    model = _fitted_model(rng)
    x = np.concatenate([[1.0], rng.normal(size=model.dim - 1)])
    idx = [4, -1, 0, 2, 5]  # offered arms: a subset, out of model order, one arm the model does not know
    cold = [0.0, 0.7, 0.0, 0.0, 0.0]
    offsets = -rng.random(5) * 0.2
    normals = rng.standard_normal((200, 5))
    pick = float(rng.random())
    first, mean, std, counts, scores, order = _run(model, x, idx, cold, offsets, normals, 200, pick)

    known = [0, 2, 3, 4]
    m_idx = [4, 0, 2, 5]
    np.testing.assert_allclose(mean[known], model.mean(x, m_idx), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(std[known], model.std(x, m_idx), rtol=1e-9, atol=1e-12)
    assert mean[1] == 0.7 and std[1] == pytest.approx(model.scale * np.sqrt(x @ x / model.alpha))

    draws = 1.5 * (mean + std * normals) + offsets
    np.testing.assert_array_equal(counts, np.bincount(draws.argmax(axis=1), minlength=5))
    np.testing.assert_allclose(scores, draws[-1], rtol=1e-12)
    assert order.tolist() == sorted(range(5), key=lambda i: -scores[i])
    assert first == int(np.searchsorted(np.cumsum(counts / 200), pick, side="right"))


def test_no_draws_ranks_by_posterior_mean_and_ties_keep_the_offered_order() -> None:
    model = _fitted_model(np.random.default_rng(3), k=3)
    x = np.zeros(model.dim)
    x[0] = 1.0
    # three cold arms with the same prior: every score ties, so the offered order stands
    first, mean, _, _, scores, order = _run(model, x, [-1, -1, -1], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0],
                                            np.zeros((1, 3)), 0, 0.0)
    assert first == 0 and order.tolist() == [0, 1, 2] and scores.tolist() == [0.75, 0.75, 0.75]
    first, mean, _, _, scores, order = _run(model, x, [0, 1, 2], [0, 0, 0], [0.0, -0.5, 0.0],
                                            np.zeros((1, 3)), 0, 0.0)
    expected = 1.5 * model.mean(x) + np.array([0.0, -0.5, 0.0])
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert first == int(np.argmax(expected)) == order[0]
    # ranking by the mean needs no spread: the same ranking without computing it
    first2, _, std, _, scores2, order2 = _run(model, x, [0, 1, 2], [0, 0, 0], [0.0, -0.5, 0.0],
                                              np.zeros((1, 3)), 0, 0.0, with_std=False)
    assert first2 == first and order2.tolist() == order.tolist() and std.tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(scores2, expected, rtol=1e-12)


def test_affine_softmax_is_a_temperature_scaled_softmax() -> None:
    rng = np.random.default_rng(4)
    coef = rng.normal(size=(5, 32)).astype(np.float32)
    intercept = rng.normal(size=5).astype(np.float32)
    x = rng.normal(size=32).astype(np.float32)
    out = np.empty(5)
    _kernels.affine_softmax(coef, intercept, 1 / 1.7, x, out)
    z = (coef.astype(np.float64) @ x + intercept) / 1.7
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_kernels_work_where_numba_finds_no_writable_cache() -> None:
    # numba refuses cache=True when no cache location is usable (read-only install, no writable home);
    # NUMBA_CACHE_LOCATOR_CLASSES=ZipCacheLocator reproduces that for a plain source file
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "ZipCacheLocator"}
    code = ("from learned_router import _kernels; _kernels.warm_up(); "
            "print(_kernels.context_vector._cache.__class__.__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "NullCache"  # compiled in memory, not cached
