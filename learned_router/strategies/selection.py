"""Choosing the learned policy's context width and prior precision by cross-validation.

The learned router's quality model is a ridge regression per arm on the context vector
(``ContextTransform``); how many PCA components and cluster memberships the context keeps and how strongly
the coefficients are pulled to the prior (``alpha``) decide whether it generalises. Both are chosen here by
k-fold cross-validation, on full information (every arm's outcome per prompt, as in a benchmark: scored by
the squared quality error) or on logged traffic (one served arm per decision, as in a decision log: scored
by the squared error, or by the held-out value of the decisions, see :class:`LoggedValue`). The benchmark
and ``train`` share this code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from learned_router.strategies.context import ContextTransform

__all__ = ["ALPHA_GRID", "CLUSTERS_GRID", "COMPONENTS_GRID", "LoggedValue", "Selection", "TrainInputs", "cv_folds",
           "narrowest_context", "select"]

Array = NDArray[np.float64]

COMPONENTS_GRID = (16, 32, 64, 128, 256, 384)
CLUSTERS_GRID = (0, 64)
ALPHA_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


@dataclass
class TrainInputs:
    """What the learned router may see of a prompt: its embedding, token estimate and task probabilities."""

    embeddings: NDArray[np.float32]
    input_tokens: Array
    task_probs: Array | None
    task_labels: tuple[str, ...]

    def take(self, rows: NDArray[np.int64]) -> TrainInputs:
        tp = None if self.task_probs is None else self.task_probs[rows]
        return TrainInputs(self.embeddings[rows], self.input_tokens[rows], tp, self.task_labels)


def cv_folds(n: int, n_folds: int, seed: int) -> list[NDArray[np.int64]]:
    """Index arrays of ``n_folds`` random folds of ``range(n)``."""
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[i::n_folds] for i in range(n_folds)]


@dataclass(frozen=True)
class Selection:
    """Cross-validated hyper-parameters, their mean squared error and, when scored by value, that value."""

    n_components: int
    n_clusters: int
    alpha: float
    cv_error: float  # full information: squared error centred per prompt; logged: of the served arm
    cv_value: float | None = None  # with a LoggedValue: the held-out utility of the greedy decisions (SNIPS)


@dataclass(frozen=True)
class LoggedValue:
    """How to score the decisions a candidate makes on logged rows, instead of its squared error.

    A row's decision is ``argmax_a w_quality[i] · q̂[i, a] + offsets[i, a]`` (``offsets``: minus the weighted
    predicted cost and latency, -inf where the arm was not offered); its value is the self-normalised
    importance-weighted mean of the logged ``utility`` over the rows where it equals the logged ``action``
    (probability ``propensity``).

    Why decisions and not squared error: with many arms and few decisions per arm, the error-minimising fit
    still routes on noise (the arm whose estimate happens to be high wins the argmax), while a stronger pull
    to each arm's prior routes like the best fixed arm. Only the value of the decisions tells which is better.
    """

    w_quality: Array
    offsets: Array
    action: NDArray[np.int64]
    propensity: Array
    utility: Array

    def take(self, rows: NDArray[np.int64]) -> LoggedValue:
        return LoggedValue(self.w_quality[rows], self.offsets[rows], self.action[rows], self.propensity[rows],
                           self.utility[rows])


def _columns(n_components: int, max_components: int, cluster_cols: int, keep_clusters: bool,
             n_tasks: int) -> NDArray[np.int64]:
    """Columns of the widest transform (``max_components`` PCs, ``cluster_cols`` memberships) that form a
    transform with ``n_components`` PCs, with or without the memberships."""
    start = 1 + max_components
    clusters = list(range(start, start + cluster_cols)) if keep_clusters else []
    rest = list(range(start + cluster_cols, start + cluster_cols + n_tasks + 1))
    return np.array([0, *range(1, 1 + n_components), *clusters, *rest])


def _grid(n: int, dim: int, components: Sequence[int]) -> list[int]:
    return sorted({min(c, dim, max(n - 2, 1)) for c in components})


def narrowest_context(n_rows: int, embed_dim: int, n_tasks: int,
                      components: Sequence[int] = COMPONENTS_GRID) -> int:
    """The narrowest context :func:`select` can choose: the bias, the length, ``n_tasks`` task probabilities
    and the fewest PCA components (no clusters)."""
    return 2 + n_tasks + min(_grid(n_rows, embed_dim, components))


def select(inputs: TrainInputs, rewards: Array, priors: Array, *, arms: NDArray[np.int64] | None = None,
           weights: Array | None = None, components: Sequence[int] = COMPONENTS_GRID,
           clusters: Sequence[int] = CLUSTERS_GRID, alphas: Sequence[float] = ALPHA_GRID, n_folds: int = 3,
           seed: int = 0, max_dim: int | None = None, value: LoggedValue | None = None) -> Selection:
    """The context width and prior precision with the lowest cross-validated squared quality error, or with
    logged rows and ``value``, the highest cross-validated value of their decisions.

    Args:
        inputs: per-row embeddings, input tokens and task probabilities.
        rewards: full information, ``arms`` None: quality per row and arm, (n, K); logged: the served arm's
            quality per row, (n,).
        priors: the prior mean quality per arm, (K,): the ridge pulls each arm's bias towards it.
        arms: the served arm per row (logged traffic), or None (full information).
        weights: importance weights of logged rows (None: all 1).
        components, clusters, alphas: the candidate PCA widths, cluster counts and prior precisions.
        max_dim: the widest context vector allowed (bias, components, clusters, task probabilities, length):
            a serving policy's route() cost grows with the square of its width.
        value: score logged rows by the value of the decisions (see :class:`LoggedValue`).

    Raises:
        ValueError: ``max_dim`` is below the narrowest candidate context.
    """
    n = len(inputs.embeddings)
    fixed = 2 + len(inputs.task_labels)
    grid = [(nc, ncl) for nc in _grid(n, inputs.embeddings.shape[1], components)
            for ncl in sorted({c for c in clusters if c == 0 or c < n // 4})
            if max_dim is None or fixed + nc + ncl <= max_dim]
    if not grid:
        smallest = narrowest_context(n, inputs.embeddings.shape[1], len(inputs.task_labels), components)
        raise ValueError(f"max_dim {max_dim} is below the narrowest context the learned router can use "
                         f"({smallest} dimensions)")
    err = np.zeros((len(grid), len(alphas)))
    # SNIPS sums of the decisions' value (see _decision_value); when no candidate's decision ever matches a
    # logged one, there is no value to compare and the squared error decides
    sums = np.zeros((5, *err.shape))
    max_cl = max(ncl for _, ncl in grid)
    for fold in cv_folds(n, n_folds, seed):
        train = np.setdiff1d(np.arange(n), fold)
        full = ContextTransform(max(nc for nc, _ in grid), task_labels=inputs.task_labels, n_clusters=max_cl,
                                seed=seed)
        tr, te = inputs.take(train), inputs.take(fold)
        full.fit(tr.embeddings, tr.input_tokens, tr.task_probs)
        Xtr_all = full.transform(tr.embeddings, tr.input_tokens, tr.task_probs)
        Xte_all = full.transform(te.embeddings, te.input_tokens, te.task_probs)
        fitted, n_cl = full.components_.shape[0], full.centroids_.shape[0]
        for gi, (nc, ncl) in enumerate(grid):
            cols = _columns(min(nc, fitted), fitted, n_cl, ncl > 0, len(inputs.task_labels))
            Xtr, Xte = Xtr_all[:, cols], Xte_all[:, cols]
            if arms is None:
                err[gi] += _cv_full(Xtr, Xte, rewards[train], rewards[fold], priors, alphas)
            else:
                w = np.ones(len(train)) if weights is None else weights[train]
                e, preds = _cv_logged(Xtr, Xte, arms[train], rewards[train], w, arms[fold], rewards[fold],
                                      priors, alphas, all_rows=value is not None)
                err[gi] += e
                if value is not None:
                    sums[:, gi] += _decision_value(preds, value.take(fold))
    if value is not None and arms is not None and (sums[0] > 0).any():
        gi, ai, cv_value = _simplest_within_one_se(sums, grid, alphas)
    else:
        gi, ai = np.unravel_index(int(np.argmin(err)), err.shape)
        cv_value = None
    denom = n * (len(priors) if arms is None else 1)
    nc, ncl = grid[gi]
    return Selection(nc, ncl, float(alphas[ai]), float(err[gi, ai] / denom), cv_value)


def _decision_value(preds: Array, value: LoggedValue) -> Array:
    """Per alpha, the sums of m, m·u, m²·u², m²·u and m² over held-out logged rows, where m is the
    importance weight of the greedy decision (1/propensity where it equals the logged action, else 0) and
    u the logged utility; ``preds`` is (alphas, rows, K). Returns (5, alphas)."""
    u = value.w_quality[None, :, None] * preds + value.offsets[None]
    m = (u.argmax(axis=2) == value.action[None, :]) / value.propensity[None, :]
    r = value.utility[None, :]
    return np.stack([m.sum(axis=1), (m * r).sum(axis=1), (m * m * r * r).sum(axis=1), (m * m * r).sum(axis=1),
                     (m * m).sum(axis=1)])


def _simplest_within_one_se(sums: Array, grid: list[tuple[int, int]], alphas: Sequence[float]
                            ) -> tuple[int, int, float]:
    """The candidate to keep: the best SNIPS value is itself an optimistic pick among many noisy estimates,
    so take the simplest candidate (strongest prior, then narrowest context) whose value is within one
    standard error of the best (the one-standard-error rule). Returns (grid index, alpha index, value)."""
    den, num, m2r2, m2r, m2 = sums
    ok = den > 0
    v = np.where(ok, num / np.where(ok, den, 1.0), -np.inf)
    var = np.where(ok, (m2r2 - 2 * v * m2r + v * v * m2) / np.where(ok, den, 1.0) ** 2, np.inf)
    gb, ab = np.unravel_index(int(np.argmax(v)), v.shape)
    floor = v[gb, ab] - np.sqrt(max(float(var[gb, ab]), 0.0))
    order = sorted(((gi, ai) for gi in range(len(grid)) for ai in range(len(alphas)) if v[gi, ai] >= floor),
                   key=lambda c: (-alphas[c[1]], grid[c[0]][0] + grid[c[0]][1]))
    gi, ai = order[0]
    return gi, ai, float(v[gi, ai])


def _cv_full(Xtr: Array, Xte: Array, Rtr: Array, Rte: Array, priors: Array, alphas: Sequence[float]) -> Array:
    """Summed squared test error, centred per prompt, per alpha of the full-information fit."""
    d = Xtr.shape[1]
    evals, V = np.linalg.eigh(Xtr.T @ Xtr)
    mu0 = np.zeros((d, len(priors)))
    mu0[0] = priors
    XtR = Xtr.T @ Rtr
    out = np.empty(len(alphas))
    for i, alpha in enumerate(alphas):
        coef = V @ ((V.T @ (XtR + alpha * mu0)) / (evals + alpha)[:, None])
        resid = Xte @ coef - Rte
        # routing depends only on differences between models for the same prompt: score the error of the
        # predictions centred per prompt (for two models, the error of the predicted quality gap)
        if resid.shape[1] > 1:
            resid = resid - resid.mean(axis=1, keepdims=True)
        out[i] = float((resid ** 2).sum())
    return out


def _cv_logged(Xtr: Array, Xte: Array, arms_tr: NDArray[np.int64], r_tr: Array, w_tr: Array,
               arms_te: NDArray[np.int64], r_te: Array, priors: Array, alphas: Sequence[float], *,
               all_rows: bool = False) -> tuple[Array, Array]:
    """Summed squared test error per alpha of per-arm fits on logged rows (one eigendecomposition per arm),
    and the predictions, (alphas, rows, K): with ``all_rows`` every arm's for every test row (to score
    decisions), else only each row's logged arm (the rest are NaN)."""
    d = Xtr.shape[1]
    out = np.zeros(len(alphas))
    preds = np.full((len(alphas), len(Xte), len(priors)), np.nan)
    for a in range(len(priors)):
        te = arms_te == a
        if not (all_rows or te.any()):
            continue
        rows = slice(None) if all_rows else te
        sel = arms_tr == a
        Xa, wa = Xtr[sel], w_tr[sel]
        evals, V = np.linalg.eigh((Xa * wa[:, None]).T @ Xa)
        b = Xa.T @ (wa * r_tr[sel])
        mu0 = np.zeros(d)
        mu0[0] = priors[a]
        for i, alpha in enumerate(alphas):
            coef = V @ ((V.T @ (b + alpha * mu0)) / (evals + alpha))
            preds[i, rows, a] = Xte[rows] @ coef
            out[i] += float(((preds[i, te, a] - r_te[te]) ** 2).sum())
    return out, preds


