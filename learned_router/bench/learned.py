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

from learned_router.bench.routers import TokenModel
from learned_router.strategies.context import ContextTransform
from learned_router.strategies.linear_ts import LinearTS
from learned_router.strategies.selection import ALPHA_GRID, COMPONENTS_GRID, TrainInputs, select

__all__ = ["LearnedFit", "TrainInputs", "fit_bandit", "fit_offline", "log_uniform"]

Array = NDArray[np.float64]


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


def fit_offline(inputs: TrainInputs, quality: Array, tokens: Array, *, scale: float = 0.5,
                components: Sequence[int] = COMPONENTS_GRID, alphas: Sequence[float] = ALPHA_GRID,
                n_folds: int = 3, seed: int = 0, max_dim: int | None = None) -> LearnedFit:
    """Full-information fit: ``quality`` and ``tokens`` are (n_train, K). Priors are the train means."""
    priors = quality.mean(axis=0)
    sel = select(inputs, quality, priors, components=components, alphas=alphas, n_folds=n_folds, seed=seed,
                 max_dim=max_dim)
    nc, ncl, alpha, mse = sel.n_components, sel.n_clusters, sel.alpha, sel.cv_error
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
    sel = select(inputs, r, priors, arms=logged, weights=w, components=components, alphas=alphas,
                 n_folds=n_folds, seed=seed, max_dim=max_dim)
    nc, ncl, alpha, mse = sel.n_components, sel.n_clusters, sel.alpha, sel.cv_error
    transform = ContextTransform(nc, task_labels=inputs.task_labels, n_clusters=ncl, seed=seed)
    transform.fit(inputs.embeddings, inputs.input_tokens, inputs.task_probs)
    X = transform.transform(inputs.embeddings, inputs.input_tokens, inputs.task_probs)
    model = LinearTS(k, transform.dim, priors, alpha=alpha, scale=scale).fit(X, logged, r, w)
    tok = TokenModel().fit(X, logged, tokens[rows, logged], k)
    return LearnedFit(transform, model, tok, nc, ncl, alpha, mse), logged
