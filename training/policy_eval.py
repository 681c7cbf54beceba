"""Counterfactual evaluation of policies on logged decisions: the learned Thompson policy and the rules.

For each policy we need its probability of every arm on every logged context (``target_probs``, (n, K)):

* the Thompson policy: Monte-Carlo P(argmax sampled utility = a) over the offered arms, computed for all
  rows at once (the same model as ``ThompsonStrategy.select``, without the optional exploration cap);
* a rule strategy: probability 1 on its first choice among the offered arms. The rules see a catalogue
  inferred from the log: each arm's mean observed quality and latency, and a price per token inferred
  from its predicted costs.

Every policy is then scored by IPS, SNIPS and DR (``learned_router.ope``) on four metrics: utility (with
the weights logged per decision), quality, cost (USD per request) and latency (s).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from learned_router.config import ProviderConfig
from learned_router.ope import evaluate_all
from learned_router.strategies import RULES
from learned_router.strategies.base import ArmView, Context, Features
from learned_router.types import ArmId, ChatRequest, Weights, split_arm
from training.logdata import LoggedData

__all__ = ["METRICS", "evaluate_policy", "observed_values", "quality_means", "rule_probabilities", "ts_probabilities"]

Array = NDArray[np.float64]
METRICS = ("utility", "quality", "cost_usd", "latency_s")


def _context(strategy: Any, data: LoggedData, rows: NDArray[np.int64]) -> Array:
    t = strategy.transform
    if t is None:
        return np.ones((len(rows), strategy.model.dim))
    tp = None
    if t.task_labels:
        col = {label: j for j, label in enumerate(data.task_labels)}
        tp = np.tile(t.task_mean_, (len(rows), 1))
        present = data.task_probs[rows].sum(axis=1) > 0
        for j, label in enumerate(t.task_labels):
            if label in col:
                tp[present, j] = data.task_probs[rows][present, col[label]]
            else:
                tp[present, j] = 0.0
    return np.asarray(t.transform(data.embeddings[rows], data.input_tokens[rows], tp))


def quality_means(strategy: Any, data: LoggedData, rows: NDArray[np.int64]) -> tuple[Array, Array]:
    """Posterior mean and draw standard deviation of quality, (len(rows), K) each, in ``data.arms`` order.
    Arms the strategy does not know get their prior and the prior's spread."""
    X = _context(strategy, data, rows)
    model = strategy.model
    k = len(data.arms)
    mean = np.empty((len(rows), k))
    std = np.empty((len(rows), k))
    index = {a: i for i, a in enumerate(strategy.arms)}
    for j, arm in enumerate(data.arms):
        i = index.get(arm)
        if i is None:
            mean[:, j] = float(strategy.priors.get(arm, 0.5))
            std[:, j] = model.scale * np.sqrt((X * X).sum(axis=1) / model.alpha)
        else:
            mean[:, j] = X @ model.mu_[i]
            std[:, j] = model.scale * np.sqrt(np.maximum(((X @ model.Ainv_[i]) * X).sum(axis=1), 0.0))
    return mean, std


def ts_probabilities(strategy: Any, data: LoggedData, rows: NDArray[np.int64], rng: np.random.Generator, *,
                     n_draws: int = 500, chunk: int = 2000) -> tuple[Array, Array]:
    """Thompson-sampling probabilities over the offered arms, (len(rows), K), and the mean quality."""
    mean, std = quality_means(strategy, data, rows)
    w = data.weights[rows]
    offsets = -w[:, 1:2] * data.filled_est_cost()[rows] * 1000.0 - w[:, 2:3] * data.arm_latency()[None, :]
    offered = data.eligible[rows]
    probs = np.zeros_like(mean)
    k = mean.shape[1]
    for s in range(0, len(rows), chunk):
        sl = slice(s, s + chunk)
        z = rng.standard_normal((n_draws, *mean[sl].shape))
        u = w[sl, 0:1] * (mean[sl] + std[sl] * z) + offsets[sl]
        u[:, ~offered[sl]] = -np.inf
        best = u.argmax(axis=2)  # (draws, rows)
        counts = np.zeros((best.shape[1], k))
        np.add.at(counts, (np.tile(np.arange(best.shape[1]), n_draws), best.reshape(-1)), 1.0)
        probs[sl] = counts / n_draws
    if not getattr(strategy, "explore", True):
        u = w[:, 0:1] * mean + offsets
        u[~offered] = -np.inf
        probs = np.eye(k)[u.argmax(axis=1)]
    return probs, mean


def _rule_views(data: LoggedData, train: NDArray[np.bool_]) -> list[ArmView]:
    est = data.filled_est_cost()
    lat = data.arm_latency()
    tokens = float(np.median(data.input_tokens)) + 1.0
    q_all = np.nanmean(data.quality) if data.has_quality.any() else 0.5
    views = []
    for j, arm in enumerate(data.arms):
        sel = train & (data.served == j) & data.has_quality
        q = float(data.quality[sel].mean()) if sel.any() else float(q_all)
        price = float(np.median(est[:, j])) / tokens * 1e6
        provider, model = split_arm(arm)
        cfg = ProviderConfig(name=provider or "arm", kind="openai", base_url="http://127.0.0.1:9/v1",
                             model=model or arm, price_in_per_mtok=max(price, 0.0), price_out_per_mtok=max(price, 0.0),
                             quality_prior=float(np.clip(q, 0, 1)), latency_prior_s=max(float(lat[j]), 1e-3))
        views.append(ArmView(arm=ArmId(arm), provider=cfg, quality=cfg.quality_prior, latency_s=cfg.latency_prior_s,
                             availability=1.0, in_flight=0, est_cost_usd=float(np.median(est[:, j]))))
    return views


def rule_probabilities(rule: str, data: LoggedData, rows: NDArray[np.int64], train: NDArray[np.bool_]) -> Array:
    """One-hot (len(rows), K): the rule's first choice among each row's offered arms."""
    views = _rule_views(data, train)
    strategy = RULES[rule]()
    request = ChatRequest.coerce({"messages": [{"role": "user", "content": "x"}]})
    cache: dict[tuple[bytes, str | None], int] = {}
    out = np.zeros((len(rows), len(data.arms)))
    for r, i in enumerate(rows.tolist()):
        tp = data.task_probs[i]
        task = data.task_labels[int(tp.argmax())] if len(tp) and tp.sum() > 0 else None
        key = (data.eligible[i].tobytes(), task)
        if key not in cache:
            offered = [views[j] for j in np.flatnonzero(data.eligible[i])]
            wq, wc, wl = data.weights[i]
            ctx = Context(request=request, features=Features(1, 1, task_probs={task: 1.0} if task else {}),
                          weights=Weights(wq, wc, wl))
            first = strategy.select(ctx, offered, np.random.default_rng(0)).arms[0]
            cache[key] = data.arms.index(str(first))
        out[r, cache[key]] = 1.0
    return out


def _rewards(data: LoggedData, rows: NDArray[np.int64], q_hat: Array) -> dict[str, tuple[Array, Array, Array]]:
    """Per metric: (rewards, reward model (n, K), row mask of usable rows)."""
    w = data.weights[rows]
    est = data.filled_est_cost()[rows]
    lat = np.tile(data.arm_latency(), (len(rows), 1))
    has_q = data.has_quality[rows]
    q_hat = np.clip(q_hat, 0.0, 1.0)
    ones = np.ones(len(rows), dtype=bool)
    return {
        "utility": (data.utility()[rows], w[:, 0:1] * q_hat - w[:, 1:2] * est * 1000.0 - w[:, 2:3] * lat, has_q),
        "quality": (data.quality[rows], q_hat, has_q),
        "cost_usd": (data.cost_usd[rows], est, ones),
        "latency_s": (data.latency_s[rows], lat, ones),
    }


def evaluate_policy(target_probs: Array, data: LoggedData, rows: NDArray[np.int64], q_hat: Array, *,
                    alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """IPS/SNIPS/DR estimates per metric of a policy given by ``target_probs`` on ``rows``."""
    out: dict[str, dict[str, Any]] = {}
    actions = data.action[rows]
    logged_p = data.propensity[rows]
    for metric, (r, r_hat, use) in _rewards(data, rows, q_hat).items():
        if use.sum() < 2:
            out[metric] = {}
            continue
        est = evaluate_all(r[use], logged_p[use], actions[use], target_probs[use], r_hat[use],
                           logged_probs=data.logged_probs[rows][use], alpha=alpha)
        out[metric] = {name: e.to_dict() for name, e in est.items()}
    return out


def observed_values(data: LoggedData, rows: NDArray[np.int64], *, alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """The logging policy's on-policy means (with normal intervals) on ``rows``."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / 2)
    out = {}
    for metric, (r, _, use) in _rewards(data, rows, np.zeros((len(rows), len(data.arms)))).items():
        x = r[use]
        if len(x) < 2:
            out[metric] = {}
            continue
        se = float(x.std(ddof=1) / np.sqrt(len(x)))
        out[metric] = {"value": float(x.mean()), "ci_low": float(x.mean() - z * se),
                       "ci_high": float(x.mean() + z * se), "n": int(len(x))}
    return out
