"""Training the learned router (linear Thompson sampling) on a dataset's train split.

* ``offline``: full information: every train prompt's outcome on every model.
* ``bandit``: each train prompt seen through one logged model drawn uniformly at random (propensity 1/K),
  regressions fitted on what was observed, weighted by 1/propensity.

Hyper-parameters (PCA dimensions, prior precision) are chosen by k-fold cross-validation of the squared
quality error on the train split only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from learned_router.bench.routers import TokenModel, cv_folds
from learned_router.strategies.context import ContextTransform
from learned_router.strategies.linear_ts import LinearTS

__all__ = ["LearnedFit", "TrainInputs", "fit_bandit", "fit_offline", "log_uniform"]

Array = NDArray[np.float64]

COMPONENTS_GRID = (16, 32, 64, 128, 256, 384)
CLUSTERS_GRID = (0, 64)
ALPHA_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


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


@dataclass
class LearnedFit:
    """A fitted learned router: transform, quality model, token model and the chosen hyper-parameters."""

    transform: ContextTransform
    model: LinearTS
    tokens: TokenModel
    n_components: int
    n_clusters: int
    alpha: float
    cv_mse: float  # offline: squared error centred per prompt; bandit: squared error of the logged arm

    def contexts(self, inputs: TrainInputs) -> Array:
        return self.transform.transform(inputs.embeddings, inputs.input_tokens, inputs.task_probs)

    def predict_quality(self, inputs: TrainInputs) -> Array:
        return self.model.mean(self.contexts(inputs))

    def predict_tokens(self, inputs: TrainInputs) -> Array:
        return self.tokens.predict(self.contexts(inputs))


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


def _cv(inputs: TrainInputs, arms: NDArray[np.int64] | None, rewards: Array, weights: Array | None,
        priors: Array, components: Sequence[int], alphas: Sequence[float], n_folds: int,
        seed: int, clusters: Sequence[int] = CLUSTERS_GRID, max_dim: int | None = None
        ) -> tuple[int, int, float, float]:
    """Cross-validated (n_components, n_clusters, alpha, mse). ``arms`` None means full information
    (rewards (n, K)); else row i observed arm ``arms[i]`` with reward ``rewards[i]``. ``max_dim`` bounds the
    width of the context vector (bias, components, clusters, task probabilities, length)."""
    n = len(inputs.embeddings)
    fixed = 2 + len(inputs.task_labels)
    grid = [(nc, ncl) for nc in _grid(n, inputs.embeddings.shape[1], components)
            for ncl in sorted({c for c in clusters if c == 0 or c < n // 4})
            if max_dim is None or fixed + nc + ncl <= max_dim]
    if not grid:
        smallest = fixed + min(_grid(n, inputs.embeddings.shape[1], components))
        raise ValueError(f"max_dim {max_dim} is below the narrowest context the learned router can use "
                         f"({smallest} dimensions)")
    err = np.zeros((len(grid), len(alphas)))
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
                err[gi] += _cv_logged(Xtr, Xte, arms[train], rewards[train], w, arms[fold], rewards[fold],
                                      priors, alphas)
    gi, ai = np.unravel_index(int(np.argmin(err)), err.shape)
    denom = n * (len(priors) if arms is None else 1)
    nc, ncl = grid[gi]
    return nc, ncl, float(alphas[ai]), float(err[gi, ai] / denom)


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
               arms_te: NDArray[np.int64], r_te: Array, priors: Array, alphas: Sequence[float]) -> Array:
    """Summed squared test error per alpha of per-arm fits on logged rows (one eigendecomposition per arm)."""
    d = Xtr.shape[1]
    out = np.zeros(len(alphas))
    for a in range(len(priors)):
        te = arms_te == a
        if not te.any():
            continue
        sel = arms_tr == a
        Xa, wa = Xtr[sel], w_tr[sel]
        evals, V = np.linalg.eigh((Xa * wa[:, None]).T @ Xa)
        b = Xa.T @ (wa * r_tr[sel])
        mu0 = np.zeros(d)
        mu0[0] = priors[a]
        for i, alpha in enumerate(alphas):
            coef = V @ ((V.T @ (b + alpha * mu0)) / (evals + alpha))
            out[i] += float(((Xte[te] @ coef - r_te[te]) ** 2).sum())
    return out


def fit_offline(inputs: TrainInputs, quality: Array, tokens: Array, *, scale: float = 0.5,
                components: Sequence[int] = COMPONENTS_GRID, alphas: Sequence[float] = ALPHA_GRID,
                n_folds: int = 3, seed: int = 0, max_dim: int | None = None) -> LearnedFit:
    """Full-information fit: ``quality`` and ``tokens`` are (n_train, K). Priors are the train means."""
    priors = quality.mean(axis=0)
    nc, ncl, alpha, mse = _cv(inputs, None, quality, None, priors, components, alphas, n_folds, seed,
                              max_dim=max_dim)
    transform = ContextTransform(nc, task_labels=inputs.task_labels, n_clusters=ncl, seed=seed)
    transform.fit(inputs.embeddings, inputs.input_tokens, inputs.task_probs)
    X = transform.transform(inputs.embeddings, inputs.input_tokens, inputs.task_probs)
    model = LinearTS(quality.shape[1], transform.dim, priors, alpha=alpha, scale=scale).fit_full(X, quality)
    tok = TokenModel().fit_full(X, tokens)
    return LearnedFit(transform, model, tok, nc, ncl, alpha, mse)


def log_uniform(n: int, k: int, seed: int) -> tuple[NDArray[np.int64], Array]:
    """A uniformly random logging policy: one model per prompt, and its propensity (1/K)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, size=n), np.full(n, 1.0 / k)


def fit_bandit(inputs: TrainInputs, quality: Array, tokens: Array, *, seed: int = 0, scale: float = 0.5,
               components: Sequence[int] = COMPONENTS_GRID, alphas: Sequence[float] = ALPHA_GRID,
               n_folds: int = 3, max_dim: int | None = None) -> tuple[LearnedFit, NDArray[np.int64]]:
    """Fit from one logged model per train prompt (uniform logging). Only the logged cells of ``quality``
    and ``tokens`` are read. Returns the fit and the logged arm per prompt."""
    n, k = quality.shape
    logged, prop = log_uniform(n, k, seed)
    rows = np.arange(n)
    r = quality[rows, logged]
    w = 1.0 / (k * prop)  # importance weights, normalised to 1 under uniform logging
    priors = np.array([r[logged == a].mean() if (logged == a).any() else r.mean() for a in range(k)])
    nc, ncl, alpha, mse = _cv(inputs, logged, r, w, priors, components, alphas, n_folds, seed, max_dim=max_dim)
    transform = ContextTransform(nc, task_labels=inputs.task_labels, n_clusters=ncl, seed=seed)
    transform.fit(inputs.embeddings, inputs.input_tokens, inputs.task_probs)
    X = transform.transform(inputs.embeddings, inputs.input_tokens, inputs.task_probs)
    model = LinearTS(k, transform.dim, priors, alpha=alpha, scale=scale).fit(X, logged, r, w)
    tok = TokenModel().fit(X, logged, tokens[rows, logged], k)
    return LearnedFit(transform, model, tok, nc, ncl, alpha, mse), logged
