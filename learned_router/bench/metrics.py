"""Scoring cost-quality frontiers (DESIGN §7) and RouteLLM's two-model metrics.

A router run at one trade-off setting gives a point (mean cost per prompt in USD, mean quality) on the test
split. A router's *frontier* is its non-dominated points joined by straight lines; every point on a segment
is reachable by mixing the two settings at its ends, so interpolation is honest. Costs are compared on a
log scale between the cheapest single model and the best single model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "apgr",
    "cost_to_reach",
    "cpt",
    "frontier",
    "frontier_area",
    "pgr_curve",
    "quality_at",
    "router_metrics",
]

Array = NDArray[np.float64]


def frontier(costs: Sequence[float], qualities: Sequence[float]) -> tuple[Array, Array]:
    """The non-dominated points, sorted by increasing cost (and so strictly increasing quality)."""
    c = np.asarray(costs, dtype=np.float64)
    q = np.asarray(qualities, dtype=np.float64)
    order = np.lexsort((-q, c))
    fc, fq = [], []
    for i in order:
        if not fq or q[i] > fq[-1] + 1e-12:
            if fc and c[i] == fc[-1]:
                fq[-1] = q[i]
                continue
            fc.append(c[i])
            fq.append(q[i])
    return np.array(fc), np.array(fq)


def quality_at(cost: float, fc: Array, fq: Array) -> float:
    """Frontier quality at ``cost`` (NaN below the cheapest point; the best quality above the dearest)."""
    if len(fc) == 0 or cost < fc[0] - 1e-15:
        return float("nan")
    if cost >= fc[-1]:
        return float(fq[-1])
    return float(np.interp(cost, fc, fq))


def cost_to_reach(quality: float, fc: Array, fq: Array) -> float | None:
    """Least frontier cost reaching ``quality`` (None when the frontier never does)."""
    if len(fq) == 0 or quality > fq[-1] + 1e-12:
        return None
    if quality <= fq[0]:
        return float(fc[0])
    return float(np.interp(quality, fq, fc))


def frontier_area(fc: Array, fq: Array, lo: float, hi: float, floor: tuple[float, float] | None = None,
                  n_grid: int = 200) -> tuple[float, Array]:
    """Mean frontier quality over a log-spaced cost grid on [lo, hi], and the per-grid-point qualities.

    ``floor`` (cost, quality), e.g. the cheapest single model, is added to the frontier: any router can fall
    back to it, so a router is not punished for never choosing to be that cheap.
    """
    if floor is not None:
        fc, fq = frontier(np.append(fc, floor[0]), np.append(fq, floor[1]))
    lo, hi = max(lo, 1e-12), max(hi, lo * (1 + 1e-9))
    grid = np.logspace(np.log10(lo), np.log10(hi), n_grid)
    vals = np.array([quality_at(c, fc, fq) for c in grid])
    vals = np.where(np.isnan(vals), 0.0, vals)
    return float(vals.mean()), vals


def pgr_curve(q_hat: Array, quality: Array, strong: int, weak: int, seed: int = 0) -> tuple[Array, Array]:
    """RouteLLM's performance-gap-recovered curve: prompts sorted by predicted gain of the strong model
    (ties in random order) go to the strong model one by one. Returns (share of strong calls, PGR)."""
    n = len(q_hat)
    gain = q_hat[:, strong] - q_hat[:, weak]
    tiebreak = np.random.default_rng(seed).random(n)
    order = np.lexsort((tiebreak, -gain))
    diff = quality[order, strong] - quality[order, weak]
    q_weak = quality[:, weak].mean()
    q_strong = quality[:, strong].mean()
    routed = q_weak + np.concatenate([[0.0], np.cumsum(diff)]) / n
    gap = q_strong - q_weak
    pgr = (routed - q_weak) / gap if abs(gap) > 1e-12 else np.zeros(n + 1)
    return np.arange(n + 1) / n, pgr


def apgr(share: Array, pgr: Array) -> float:
    """Area under the PGR curve over the share of strong calls in [0, 1]."""
    return float(np.sum((pgr[1:] + pgr[:-1]) / 2 * np.diff(share)))


def cpt(share: Array, pgr: Array, target: float) -> float | None:
    """Least share of strong calls at which PGR reaches ``target`` (e.g. 0.5 for CPT(50%))."""
    hit = np.nonzero(pgr >= target - 1e-12)[0]
    return float(share[hit[0]]) if len(hit) else None


def router_metrics(costs: Sequence[float], qualities: Sequence[float], *, best_cost: float, best_quality: float,
                   oracle_quality: float, cost_lo: float, cost_hi: float,
                   floor: tuple[float, float] | None = None) -> dict[str, float | None]:
    """DESIGN §7 metrics of one router against the best single model (chosen on the train split).

    ``savings_*`` are 1 - cost / best_cost to reach 100%, 98% and 95% of the best model's quality;
    ``gap_closed`` is the share of the oracle's quality gain over the best model that the router achieves at
    the best model's cost; ``area`` the mean quality over the log-cost range [cost_lo, cost_hi].
    """
    fc, fq = frontier(costs, qualities)
    q_at = quality_at(best_cost, fc, fq)
    out: dict[str, float | None] = {"quality_at_best_cost": None if np.isnan(q_at) else q_at}
    for label, share in (("savings_100", 1.0), ("savings_98", 0.98), ("savings_95", 0.95)):
        c = cost_to_reach(share * best_quality, fc, fq)
        out[label] = None if c is None or best_cost <= 0 else 1.0 - c / best_cost
    gap = oracle_quality - best_quality
    out["gap_closed"] = None if np.isnan(q_at) or gap <= 1e-12 else (q_at - best_quality) / gap
    out["area"] = frontier_area(fc, fq, cost_lo, cost_hi, floor)[0]
    out["max_quality"] = float(fq.max()) if len(fq) else None
    return out
