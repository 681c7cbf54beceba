"""How sure the benchmark's headline figures are: bootstrap intervals over the test prompts.

Each router's choices (and, for the two-model metrics, its predicted quality gains) are fixed; only which
test prompts are scored is resampled. A figure measured on a few thousand 0/1 outcomes moves by a point or
more between resamples, so "the learned router is above kNN" means something only with its interval: the
comparison is *paired* (both routers scored on the same resample), which removes the noise they share.

Hand-written rather than ``scipy.stats.bootstrap``: the statistics here (a frontier area, a cost to reach a
quality, a PGR curve) need the whole resample at once and per-resample reference points, and a multinomial
weight vector per resample lets every router be scored on the same draw without copying the matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from learned_router.bench import metrics as M

__all__ = ["paired_knn_intervals", "resample_weights", "share_interval"]

Array = NDArray[np.float64]
_NEVER = 1e300  # 'not reached' sorts above every share, and percentiles of it stay finite


def resample_weights(n: int, n_boot: int = 200, seed: int = 0) -> Array:
    """(n_boot, n) resampling weights summing to 1 per row: a multinomial draw of n prompts. One matrix serves
    every figure of a run, so all are computed on the same resamples."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) / n for _ in range(n_boot)])


def _ci(values: Array) -> list[float]:
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def share_interval(choices: NDArray[np.int64], Q: Array, C: Array, best: int, W: Array) -> dict[str, Any]:
    """The cost share at which the frontier of ``choices`` (points × prompts) reaches the best single
    model's quality, as a 95% interval (None at an end means 'not reached'), the probability that it is at
    most 60%, and the best model's quality interval. ``Q``, ``C``: test quality and cost (prompts × models);
    ``W``: :func:`resample_weights`.
    The share moves by tens of points between resamples, because the frontier is flat near the top."""
    rows = np.arange(Q.shape[0])
    q_pts, c_pts = Q[rows, choices], C[rows, choices]
    shares, best_q = np.empty(len(W)), W @ Q[:, best]
    best_c = W @ C[:, best]
    qs, cs = W @ q_pts.T, W @ c_pts.T  # (n_boot, points)
    for b in range(len(W)):
        fc, fq = M.frontier(cs[b], qs[b])
        reach = M.cost_to_reach(float(best_q[b]), fc, fq)
        shares[b] = np.inf if reach is None else reach / max(float(best_c[b]), 1e-15)
    lo, hi = np.percentile(np.where(np.isfinite(shares), shares, _NEVER), [2.5, 97.5], method="nearest")
    return {"cost_share_ci95": [None if v >= _NEVER else float(v) for v in (lo, hi)],
            "p_cost_share_<=60%": float((shares <= 0.6).mean()),
            "best_quality_ci95": _ci(best_q)}


def _apgr_cpt(gain: Array, diff: Array, W: Array, seed: int) -> tuple[Array, Array]:
    """Per resample, APGR and CPT(50%) of routing prompts to the strong model in order of predicted
    ``gain`` (ties in random order, as :func:`metrics.pgr_curve`); ``diff`` = strong minus weak quality."""
    order = np.lexsort((np.random.default_rng(seed).random(len(gain)), -gain))
    Wo = W[:, order]
    share = np.hstack([np.zeros((len(W), 1)), np.cumsum(Wo, axis=1)])
    routed = np.hstack([np.zeros((len(W), 1)), np.cumsum(Wo * diff[order], axis=1)])
    gap = routed[:, -1:]
    pgr = np.divide(routed, gap, out=np.zeros_like(routed), where=np.abs(gap) > 1e-12)
    apgr = np.sum((pgr[:, 1:] + pgr[:, :-1]) / 2 * np.diff(share, axis=1), axis=1)
    reached = pgr >= 0.5 - 1e-12
    cpt = np.where(reached.any(axis=1), share[np.arange(len(W)), np.argmax(reached, axis=1)], 1.0)
    return apgr, cpt


def paired_knn_intervals(choices: NDArray[np.int64], knn_choices: NDArray[np.int64], Q: Array, C: Array,
                         W: Array, *, best: int, cheapest: int, q_hat: Array | None = None,
                         knn_q_hat: Array | None = None, seed: int = 0) -> dict[str, Any]:
    """95% intervals of the learned router's advantage over kNN, both scored on the same resamples: the
    frontier area difference and, for two models (when both routers' predicted qualities are given), the
    APGR and CPT(50%) differences (a negative CPT difference means fewer strong calls than kNN). ``W``:
    :func:`resample_weights`; ``seed`` orders ties in the predicted gains."""
    rows = np.arange(Q.shape[0])
    lo_c, lo_q, hi_c = W @ C[:, cheapest], W @ Q[:, cheapest], W @ C[:, best]
    points = []
    for ch in (choices, knn_choices):
        points.append((W @ C[rows, ch].T, W @ Q[rows, ch].T))  # (n_boot, points) each
    diffs = np.empty(len(W))
    for b in range(len(W)):
        areas = []
        for cs, qs in points:
            fc, fq = M.frontier(cs[b], qs[b])
            areas.append(M.frontier_area(fc, fq, float(lo_c[b]), float(max(hi_c[b], lo_c[b])),
                                         (float(lo_c[b]), float(lo_q[b])))[0])
        diffs[b] = areas[0] - areas[1]
    out: dict[str, Any] = {"area_minus_knn_ci95": _ci(diffs)}
    if q_hat is not None and knn_q_hat is not None and Q.shape[1] == 2:
        weak = 1 - best
        diff = Q[:, best] - Q[:, weak]
        a_l, c_l = _apgr_cpt(q_hat[:, best] - q_hat[:, weak], diff, W, seed)
        a_k, c_k = _apgr_cpt(knn_q_hat[:, best] - knn_q_hat[:, weak], diff, W, seed)
        out["apgr_minus_knn_ci95"] = _ci(a_l - a_k)
        out["cpt50_minus_knn_ci95"] = _ci(c_l - c_k)
    return out
