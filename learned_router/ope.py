"""Off-policy evaluation: what a *target* policy would have scored on traffic logged under another policy.

All estimators are pure functions of arrays over the n logged decisions:

* ``rewards`` (n,): the logged outcome of the chosen arm, for any metric (utility, quality, cost, latency);
* ``logged_p`` (n,): the logging policy's probability of the arm it chose (the logged propensity);
* ``target_p`` (n,): the target policy's probability of that same arm in that context.

With importance weights ``w = target_p / logged_p``:

* **IPS** ``mean(w r)``: unbiased when every logged propensity is positive where the target has mass;
  variance grows with the weights.
* **SNIPS** ``sum(w r) / sum(w)``: self-normalised; slightly biased (O(1/n)) but far less variable;
  interval by the delta method.
* **DR** (doubly robust) ``mean(sum_a pi(a|x) r̂(x, a) + w (r - r̂(x, a_logged)))``: unbiased when the
  propensities are right, whatever the reward model ``r̂``; low variance when ``r̂`` is good.

Intervals are normal (CLT) on the per-sample terms. Each estimate carries the effective sample size
``ESS = (sum w)² / sum w²`` and warnings when it should not be trusted: tiny logged propensities, a small
ESS, or target mass on arms the logging policy never plays (when the full logged distribution is given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Estimate", "doubly_robust", "effective_sample_size", "evaluate_all", "ips", "snips"]

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Estimate:
    """One off-policy estimate of a policy's mean reward per request.

    Attributes:
        estimator: ``ips``, ``snips`` or ``dr``.
        value: the point estimate. ci_low, ci_high: the (1 - alpha) interval. stderr: its standard error.
        n: logged decisions used. ess: effective sample size of the importance weights.
        max_weight: the largest importance weight.
        warnings: reasons not to trust the estimate (empty when none).
    """

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    stderr: float
    n: int
    ess: float
    max_weight: float
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reliable(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict[str, Any]:
        return {"estimator": self.estimator, "value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "stderr": self.stderr, "n": self.n, "ess": self.ess, "max_weight": self.max_weight,
                "warnings": list(self.warnings)}


def effective_sample_size(weights: ArrayLike) -> float:
    """Kish's effective sample size ``(sum w)² / sum w²`` (0 for no weight)."""
    w = np.asarray(weights, dtype=np.float64)
    denom = float((w * w).sum())
    return 0.0 if denom == 0 else float(w.sum() ** 2 / denom)


def _inputs(rewards: ArrayLike, logged_p: ArrayLike, target_p: ArrayLike) -> tuple[Array, Array, Array]:
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    mu = np.asarray(logged_p, dtype=np.float64).reshape(-1)
    pi = np.asarray(target_p, dtype=np.float64).reshape(-1)
    if not len(r) == len(mu) == len(pi):
        raise ValueError(f"rewards, logged_p and target_p must have one value per decision; got lengths "
                         f"{len(r)}, {len(mu)}, {len(pi)}")
    if len(r) == 0:
        raise ValueError("no logged decisions to evaluate")
    if not (np.isfinite(r).all() and np.isfinite(mu).all() and np.isfinite(pi).all()):
        raise ValueError("rewards and probabilities must be finite")
    if (mu <= 0).any() or (mu > 1 + 1e-9).any():
        raise ValueError("logged propensities must be in (0, 1]; a zero propensity means the logged arm could "
                         "not have been chosen (check the log)")
    if (pi < 0).any() or (pi > 1 + 1e-9).any():
        raise ValueError("target probabilities must be in [0, 1]")
    return r, mu, pi


def _warnings(mu: Array, w: Array, *, min_propensity: float, min_ess: float) -> list[str]:
    out = []
    ess = effective_sample_size(w)
    small = int(((mu < min_propensity) & (w > 1)).sum())
    if small:
        out.append(f"{small} logged propensities are below {min_propensity:g} where the target is likelier; "
                   f"weights up to {w.max():.3g}")
    if ess < min_ess:
        out.append(f"effective sample size {ess:.1f} is below {min_ess:g}")
    return out


def _estimate(name: str, value: float, stderr: float, w: Array, warnings: list[str], alpha: float) -> Estimate:
    z = NormalDist().inv_cdf(1 - alpha / 2)
    return Estimate(name, float(value), float(value - z * stderr), float(value + z * stderr), float(stderr),
                    len(w), effective_sample_size(w), float(w.max()), tuple(warnings))


def ips(rewards: ArrayLike, logged_p: ArrayLike, target_p: ArrayLike, *, alpha: float = 0.05,
        min_propensity: float = 0.01, min_ess: float = 30.0) -> Estimate:
    """Inverse propensity scoring: ``mean(w r)`` with a CLT interval on the terms ``w r``."""
    r, mu, pi = _inputs(rewards, logged_p, target_p)
    w = pi / mu
    terms = w * r
    stderr = float(terms.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else float("inf")
    return _estimate("ips", float(terms.mean()), stderr, w, _warnings(mu, w, min_propensity=min_propensity,
                                                                       min_ess=min_ess), alpha)


def snips(rewards: ArrayLike, logged_p: ArrayLike, target_p: ArrayLike, *, alpha: float = 0.05,
          min_propensity: float = 0.01, min_ess: float = 30.0) -> Estimate:
    """Self-normalised IPS ``sum(w r) / sum(w)``; delta-method standard error
    ``sqrt(sum(w² (r - V)²)) / sum(w)``."""
    r, mu, pi = _inputs(rewards, logged_p, target_p)
    w = pi / mu
    warnings = _warnings(mu, w, min_propensity=min_propensity, min_ess=min_ess)
    total = float(w.sum())
    if total == 0:
        warnings.append("the target policy puts no probability on any logged arm")
        return _estimate("snips", float("nan"), float("inf"), w, warnings, alpha)
    value = float((w * r).sum() / total)
    stderr = float(np.sqrt(((w * (r - value)) ** 2).sum()) / total)
    if len(r) > 1:
        stderr *= np.sqrt(len(r) / (len(r) - 1))
    return _estimate("snips", value, stderr, w, warnings, alpha)


def doubly_robust(rewards: ArrayLike, logged_p: ArrayLike, actions: ArrayLike, target_probs: ArrayLike,
                  reward_hat: ArrayLike, *, logged_probs: ArrayLike | None = None, alpha: float = 0.05,
                  min_propensity: float = 0.01, min_ess: float = 30.0) -> Estimate:
    """Doubly robust estimate.

    Args:
        rewards, logged_p: as for :func:`ips`.
        actions: (n,) the index of the logged arm in the columns of ``target_probs``.
        target_probs: (n, K) the target policy's probability of every arm (rows sum to 1; 0 for arms
            not offered).
        reward_hat: (n, K) the reward model's prediction for every arm.
        logged_probs: optional (n, K) logging distribution over arms, to check support.
    """
    a = np.asarray(actions, dtype=np.int64).reshape(-1)
    P = np.asarray(target_probs, dtype=np.float64)
    R = np.asarray(reward_hat, dtype=np.float64)
    if P.ndim != 2 or P.shape != R.shape or len(P) != len(a):
        raise ValueError(f"target_probs and reward_hat must both be (n, K) with n = len(actions); got "
                         f"{P.shape}, {R.shape}, {len(a)}")
    if len(a) and (a.min() < 0 or a.max() >= P.shape[1]):
        raise ValueError("an action index is outside the arm columns")
    rows = np.arange(len(a))
    r, mu, pi = _inputs(rewards, logged_p, P[rows, a])
    w = pi / mu
    terms = (P * R).sum(axis=1) + w * (r - R[rows, a])
    warnings = _warnings(mu, w, min_propensity=min_propensity, min_ess=min_ess)
    if logged_probs is not None:
        L = np.asarray(logged_probs, dtype=np.float64)
        if L.shape != P.shape:
            raise ValueError(f"logged_probs must have shape {P.shape}, got {L.shape}")
        unsupported = float((P * (L <= 0)).sum(axis=1).mean())
        if unsupported > 1e-3:
            warnings.append(f"the target puts {unsupported:.1%} of its mass on arms the logging policy never "
                            "plays; only the reward model speaks for them")
    stderr = float(terms.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else float("inf")
    return _estimate("dr", float(terms.mean()), stderr, w, warnings, alpha)


def evaluate_all(rewards: ArrayLike, logged_p: ArrayLike, actions: ArrayLike, target_probs: ArrayLike,
                 reward_hat: ArrayLike | None = None, *, logged_probs: ArrayLike | None = None,
                 alpha: float = 0.05, min_propensity: float = 0.01, min_ess: float = 30.0) -> dict[str, Estimate]:
    """IPS, SNIPS and (when ``reward_hat`` is given) DR for one target policy and one metric."""
    P = np.asarray(target_probs, dtype=np.float64)
    a = np.asarray(actions, dtype=np.int64).reshape(-1)
    pi = P[np.arange(len(a)), a]
    kw: dict[str, Any] = {"alpha": alpha, "min_propensity": min_propensity, "min_ess": min_ess}
    out = {"ips": ips(rewards, logged_p, pi, **kw), "snips": snips(rewards, logged_p, pi, **kw)}
    if reward_hat is not None:
        out["dr"] = doubly_robust(rewards, logged_p, a, P, reward_hat, logged_probs=logged_probs, **kw)
    return out
