"""The routers compared by the benchmark, as per-prompt quality predictors plus one shared decision rule.

Every learned router predicts a (prompt × model) quality matrix from the prompt embedding; the choice at a
trade-off setting ``w_cost`` is ``argmax_a  q̂[i, a] - w_cost · ĉ[i, a]`` where ``ĉ`` is the predicted cost
of 1,000 such requests in USD (prices from models.json, output tokens predicted per model from the train
split). So routers differ only in how well they predict quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from learned_router.bench.dataset import BenchDataset, quality_range
from learned_router.strategies.selection import cv_folds

__all__ = [
    "TokenModel",
    "choose",
    "knn_quality",
    "predicted_cost_per_1k",
    "regression_quality",
    "rule_choices",
    "select_knn_k",
]

Array = NDArray[np.float64]


_LOG_TOKENS_CAP = 12.0  # log(1 + tokens) is clipped to [0, 12]: at most ~160k tokens


@dataclass
class TokenModel:
    """Predicts each model's output tokens for a prompt: per-model ridge regression of log(1 + tokens) on the
    context vector, fitted on the rows where that model was observed.

    A regression on the log scale predicts the median, and answer lengths are skewed: mapped back with
    ``expm1`` it underestimates the mean, and so the expected cost, by up to 2x for some models. Each model's
    prediction is therefore scaled by its *smearing factor* (Duan, 1983), the mean of exp(residual) over
    out-of-fold residuals on the train rows (in-sample residuals would understate it), which makes the
    predicted tokens (plus one) unbiased for their mean."""

    alpha: float = 10.0
    n_folds: int = 3
    seed: int = 0

    def fit(self, X: Array, arms: NDArray[np.int64], tokens: Array, n_arms: int) -> TokenModel:
        y_all = np.log1p(np.maximum(tokens, 0.0))
        fallback = float(y_all.mean()) if len(y_all) else np.log1p(200.0)
        self.coef_ = np.zeros((n_arms, X.shape[1]))
        self.smear_ = np.ones(n_arms)
        for a in range(n_arms):
            sel = arms == a
            if not sel.any():
                self.coef_[a, 0] = fallback
                continue
            Xa, ya = X[sel], y_all[sel, None]
            self.coef_[a] = self._solve(Xa, ya, np.array([fallback]))[:, 0]
            self.smear_[a] = self._smearing(Xa, ya, np.array([fallback]))[0]
        return self

    def fit_full(self, X: Array, tokens: Array) -> TokenModel:
        """All models observed on every row: ``tokens`` is (n, K)."""
        Y = np.log1p(np.maximum(tokens, 0.0))
        shrink_to = np.full(Y.shape[1], Y.mean())
        self.coef_ = self._solve(X, Y, shrink_to).T
        self.smear_ = self._smearing(X, Y, shrink_to)
        return self

    def _solve(self, X: Array, Y: Array, shrink_to: Array) -> Array:
        """Ridge coefficients (d, K) of ``Y`` on ``X``, the intercept shrunk toward ``shrink_to``."""
        A = X.T @ X + self.alpha * np.eye(X.shape[1])
        B = X.T @ Y
        B[0] += self.alpha * shrink_to
        return np.linalg.solve(A, B)

    def _smearing(self, X: Array, Y: Array, shrink_to: Array) -> Array:
        """Per column of ``Y``, the mean of exp(out-of-fold residual); 1 when there are too few rows."""
        n = len(X)
        if n < 3 * self.n_folds:
            return np.ones(Y.shape[1])
        resid = np.empty_like(Y)
        for fold in cv_folds(n, self.n_folds, self.seed):
            train = np.setdiff1d(np.arange(n), fold)
            resid[fold] = Y[fold] - np.clip(X[fold] @ self._solve(X[train], Y[train], shrink_to), 0.0, _LOG_TOKENS_CAP)
        return np.exp(resid).mean(axis=0)

    def predict(self, X: Array) -> Array:
        """Predicted mean output tokens, shape (n, K)."""
        return np.maximum(np.exp(np.clip(X @ self.coef_.T, 0.0, _LOG_TOKENS_CAP)) * self.smear_ - 1.0, 0.0)


def predicted_cost_per_1k(data: BenchDataset, rows: NDArray[np.int64], out_tokens: Array) -> Array:
    """Predicted USD cost of 1,000 requests like each prompt on each model: shape (len(rows), K)."""
    tin = data.input_tokens[rows][:, None]
    return (tin * data.price_in_per_mtok + out_tokens * data.price_out_per_mtok) / 1e6 * 1000.0


def choose(q_hat: Array, c_hat: Array, w_cost: float) -> NDArray[np.int64]:
    """The decision rule shared by every learned router: per row, argmax of q̂ - w_cost · ĉ (ties: cheaper)."""
    u = q_hat - w_cost * c_hat - 1e-12 * c_hat
    return np.argmax(u, axis=1)


# ---------------------------------------------------------------------------- kNN
def _topk_neighbours(query: NDArray[np.float32], base: NDArray[np.float32], k: int,
                     exclude_self: bool = False, chunk: int = 1024) -> NDArray[np.int64]:
    """Indices of the ``k`` most similar base rows per query row, most similar first."""
    out = np.empty((len(query), k), dtype=np.int64)
    for s in range(0, len(query), chunk):
        sims = query[s:s + chunk] @ base.T
        if exclude_self:
            sims[np.arange(sims.shape[0]), np.arange(s, s + sims.shape[0])] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[s:s + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def knn_quality(train_emb: NDArray[np.float32], train_quality: Array, test_emb: NDArray[np.float32],
                k: int) -> Array:
    """Mean quality of each model over the ``k`` most similar (cosine) train prompts: shape (n_test, K)."""
    k = max(1, min(k, len(train_emb)))
    nn = _topk_neighbours(test_emb.astype(np.float32), train_emb.astype(np.float32), k)
    return train_quality[nn].mean(axis=1)


def select_knn_k(train_emb: NDArray[np.float32], train_quality: Array,
                 candidates: Sequence[int] = (5, 10, 20, 40, 80, 160)) -> int:
    """Choose k by leave-one-out squared error on the train split."""
    ks = [k for k in candidates if k < len(train_emb)] or [1]
    emb = train_emb.astype(np.float32)
    nn = _topk_neighbours(emb, emb, max(ks), exclude_self=True)
    sq_err = np.zeros(len(ks))
    for s in range(0, len(emb), 1000):
        csum = np.cumsum(train_quality[nn[s:s + 1000]], axis=1)
        for j, k in enumerate(ks):
            sq_err[j] += float(((csum[:, k - 1] / k - train_quality[s:s + 1000]) ** 2).sum())
    return ks[int(np.argmin(sq_err))]


# ---------------------------------------------------------------------- regression
def regression_quality(train_emb: NDArray[np.float32], train_tokens: Array, train_quality: Array,
                       test_emb: NDArray[np.float32], test_tokens: Array) -> Array:
    """Per-model regression on [embedding, log prompt length]: logistic regression for pass/fail quality
    (two values, 0/1 or another pair), ridge (alpha by generalised cross-validation) otherwise.
    Shape (n_test, K)."""
    from sklearn.linear_model import LogisticRegression, RidgeCV

    def feats(emb: NDArray[np.float32], tok: Array) -> Array:
        return np.hstack([emb.astype(np.float64), np.log1p(tok)[:, None] / 8.0])

    Xtr, Xte = feats(train_emb, train_tokens), feats(test_emb, test_tokens)
    values = np.unique(train_quality)
    if len(values) > 2:
        model = RidgeCV(alphas=np.logspace(-2, 3, 11)).fit(Xtr, train_quality)
        low, span = quality_range(train_quality)
        return np.clip(model.predict(Xte), low, low + span)
    fail, passed = values[0], values[-1]
    out = np.empty((len(Xte), train_quality.shape[1]))
    for a in range(train_quality.shape[1]):
        y = train_quality[:, a]
        if y.min() == y.max():
            out[:, a] = y[0]
            continue
        clf = LogisticRegression(C=1.0, max_iter=300, tol=1e-3).fit(Xtr, (y == passed).astype(int))
        out[:, a] = fail + (passed - fail) * clf.predict_proba(Xte)[:, 1]
    return out


# --------------------------------------------------------------------------- rules
def rule_choices(data: BenchDataset, priors: Array, mean_out_tokens: Array) -> dict[str, int]:
    """The arm each rule strategy (cost, quality, balanced, latency) picks, using the real rule classes with
    quality priors = each model's train-split mean quality, prices/latency from models.json and, as the
    estimated cost of a request, the model's mean train-split cost (what a production router's estimate
    converges to from the bills). The rules ignore the prompt (no per-task table), so one choice serves
    every prompt."""
    from learned_router.config import ProviderConfig
    from learned_router.strategies.base import ArmView, Context, Features
    from learned_router.strategies.rules import BalancedStrategy, CostStrategy, LatencyStrategy, QualityStrategy
    from learned_router.types import ArmId, ChatRequest, Weights

    views = []
    train = data.is_train if data.is_train.any() else np.ones(len(data.prompts), dtype=bool)
    mean_cost = data.cost_usd[train].mean(axis=0)  # what a request cost on each model, as the bills said
    for j, model in enumerate(data.models):
        cfg = ProviderConfig(name=f"m{j}", kind="openai", base_url="http://localhost", model=model,
                             price_in_per_mtok=float(data.price_in_per_mtok[j]),
                             price_out_per_mtok=float(data.price_out_per_mtok[j]),
                             quality_prior=float(np.clip(priors[j], 0, 1)),
                             latency_prior_s=float(max(1e-3, data.ttft_s[j] + mean_out_tokens[j]
                                                       / data.output_tokens_per_s[j])))
        views.append(ArmView(arm=ArmId(cfg.arm), provider=cfg, quality=cfg.quality_prior,
                             latency_s=cfg.latency_prior_s, availability=1.0, in_flight=0,
                             est_cost_usd=float(mean_cost[j])))
    ctx = Context(request=ChatRequest(messages=({"role": "user", "content": "x"},)),
                  features=Features(input_tokens=1, output_tokens_est=1), weights=Weights())
    index = {v.arm: j for j, v in enumerate(views)}
    rng = np.random.default_rng(0)
    rules = {"rule:cost": CostStrategy(), "rule:quality": QualityStrategy(), "rule:balanced": BalancedStrategy(),
             "rule:latency": LatencyStrategy()}
    return {name: index[rule.select(ctx, views, rng).arms[0]] for name, rule in rules.items()}
