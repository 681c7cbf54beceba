"""Contextual linear Thompson sampling in plain numpy; contexts come from ``context.ContextTransform``.

Per arm *a*, quality is modelled as ``q = x · theta_a + noise`` with a Gaussian prior
``theta_a ~ N(mu0_a, (noise_sd² / alpha) I)`` whose mean puts the arm's quality prior on the bias feature
(``x[bias_index] == 1``) and zero elsewhere. The posterior after evidence ``(x_i, r_i, w_i)`` is

    A_a = alpha I + sum w_i x_i x_iᵀ,   b_a = alpha mu0_a + sum w_i r_i x_i,
    mu_a = A_a⁻¹ b_a,                   Sigma_a = scale² A_a⁻¹,

where ``scale`` (the noise standard deviation times an exploration multiplier) sets how widely Thompson
draws spread. A sampled quality for context *x* is one normal draw per arm, with mean ``x · mu_a`` and
variance ``scale² x A_a⁻¹ xᵀ``; the propensity of an arm is the Monte-Carlo frequency with which its
sampled utility is the largest.

``forgetting`` (gamma in (0, 1]) discounts old evidence toward the prior at every update of an arm:
``A ← gamma A + (1 - gamma) alpha I`` and ``b ← gamma b + (1 - gamma) alpha mu0``, so a drifting arm is
followed. With gamma = 1 the update is a rank-one Sherman-Morrison step on the cached inverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from learned_router.errors import PolicyStateError
from learned_router.strategies.context import ContextTransform

__all__ = ["STATE_VERSION", "ContextTransform", "LinearTS"]

STATE_VERSION = 1
_KIND = "linear_ts"

Array = NDArray[np.float64]


class LinearTS:
    """Per-arm Bayesian linear regression with Thompson sampling.

    Args:
        n_arms: number of arms K.
        dim: context dimension d (including the bias feature).
        priors: per-arm prior quality (the bias coefficient of the prior mean), shape (K,).
        alpha: prior precision (ridge strength), in units of observations.
        scale: standard deviation multiplier of the posterior draws (noise sd × exploration).
        forgetting: gamma in (0, 1]; 1 keeps all evidence.
        bias_index: the position of the constant-1 feature in x.
    """

    def __init__(self, n_arms: int, dim: int, priors: ArrayLike | None = None, *, alpha: float = 1.0,
                 scale: float = 0.25, forgetting: float = 1.0, bias_index: int = 0) -> None:
        if n_arms < 1 or dim < 1:
            raise ValueError(f"need n_arms >= 1 and dim >= 1, got {n_arms}, {dim}")
        if not alpha > 0 or not scale >= 0 or not 0 < forgetting <= 1:
            raise ValueError(f"need alpha > 0, scale >= 0, 0 < forgetting <= 1; got {alpha}, {scale}, {forgetting}")
        if not 0 <= bias_index < dim:
            raise ValueError(f"bias_index {bias_index} out of range for dim {dim}")
        self.n_arms = int(n_arms)
        self.dim = int(dim)
        self.alpha = float(alpha)
        self.scale = float(scale)
        self.forgetting = float(forgetting)
        self.bias_index = int(bias_index)
        pri = np.full(self.n_arms, 0.5) if priors is None else np.asarray(priors, dtype=np.float64).reshape(-1)
        if pri.shape != (self.n_arms,):
            raise ValueError(f"priors must have shape ({self.n_arms},), got {pri.shape}")
        self.priors_ = pri.copy()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self, arms: Sequence[int] | None = None) -> None:
        """Return ``arms`` (default: all) to the prior."""
        if arms is None:
            k, d = self.n_arms, self.dim
            self.A_ = np.tile(np.eye(d) * self.alpha, (k, 1, 1))
            self.b_ = np.zeros((k, d))
            self.Ainv_ = np.tile(np.eye(d) / self.alpha, (k, 1, 1))
            self.mu_ = np.zeros((k, d))
            self.n_obs_ = np.zeros(k)
            arms = range(k)
        for a in arms:
            mu0 = self._prior_mean(a)
            self.A_[a] = np.eye(self.dim) * self.alpha
            self.b_[a] = self.alpha * mu0
            self.Ainv_[a] = np.eye(self.dim) / self.alpha
            self.mu_[a] = mu0
            self.n_obs_[a] = 0.0

    def _prior_mean(self, arm: int) -> Array:
        mu0 = np.zeros(self.dim)
        mu0[self.bias_index] = self.priors_[arm]
        return mu0

    def add_arm(self, prior: float) -> int:
        """Append a cold arm with quality prior ``prior``; returns its index."""
        self.priors_ = np.append(self.priors_, float(prior))
        d = self.dim
        self.A_ = np.concatenate([self.A_, np.eye(d)[None] * self.alpha])
        self.b_ = np.concatenate([self.b_, np.zeros((1, d))])
        self.Ainv_ = np.concatenate([self.Ainv_, np.eye(d)[None] / self.alpha])
        self.mu_ = np.concatenate([self.mu_, np.zeros((1, d))])
        self.n_obs_ = np.append(self.n_obs_, 0.0)
        self.n_arms += 1
        self.reset([self.n_arms - 1])
        return self.n_arms - 1

    # --------------------------------------------------------------- learning
    def partial_fit(self, arm: int, x: ArrayLike, reward: float, weight: float = 1.0) -> LinearTS:
        """Add one observation ``reward`` of ``arm`` in context ``x`` (shape (d,)) with ``weight``."""
        xv = np.asarray(x, dtype=np.float64).reshape(-1)
        if xv.shape[0] != self.dim:
            raise ValueError(f"x must have {self.dim} values, got {xv.shape[0]}")
        if not 0 <= arm < self.n_arms:
            raise IndexError(f"arm {arm} out of range for {self.n_arms} arms")
        w = float(weight)
        if w <= 0:
            return self
        g = self.forgetting
        if g < 1.0:
            self.A_[arm] = g * self.A_[arm] + (1 - g) * self.alpha * np.eye(self.dim) + w * np.outer(xv, xv)
            self.b_[arm] = g * self.b_[arm] + (1 - g) * self.alpha * self._prior_mean(arm) + w * reward * xv
            self.Ainv_[arm] = np.linalg.inv(self.A_[arm])
            self.n_obs_[arm] = g * self.n_obs_[arm] + w
        else:
            Ainv = self.Ainv_[arm]
            u = Ainv @ xv
            Ainv -= np.outer(u, u) * (w / (1.0 + w * (xv @ u)))
            self.A_[arm] += w * np.outer(xv, xv)
            self.b_[arm] += w * reward * xv
            self.n_obs_[arm] += w
        self.mu_[arm] = self.Ainv_[arm] @ self.b_[arm]
        return self

    def fit(self, X: ArrayLike, arms: ArrayLike, rewards: ArrayLike, weights: ArrayLike | None = None) -> LinearTS:
        """Refit from scratch on a batch: row i says arm ``arms[i]`` earned ``rewards[i]`` in context ``X[i]``.

        Equivalent to ``reset()`` then ``partial_fit`` per row (with forgetting = 1), in one solve per arm.
        """
        Xm = np.asarray(X, dtype=np.float64)
        a_idx = np.asarray(arms, dtype=np.int64).reshape(-1)
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        w = np.ones_like(r) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if Xm.ndim != 2 or Xm.shape[1] != self.dim or not len(Xm) == len(a_idx) == len(r) == len(w):
            raise ValueError("X must be (n, dim) and arms, rewards, weights of length n")
        if len(a_idx) and (a_idx.min() < 0 or a_idx.max() >= self.n_arms):
            raise IndexError("an arm index is out of range")
        self.reset()
        for a in range(self.n_arms):
            sel = a_idx == a
            if not sel.any():
                continue
            Xa, wa = Xm[sel], w[sel]
            self.A_[a] += (Xa * wa[:, None]).T @ Xa
            self.b_[a] += Xa.T @ (wa * r[sel])
            self.n_obs_[a] = wa.sum()
            self._refresh(a)
        return self

    def fit_full(self, X: ArrayLike, rewards: ArrayLike) -> LinearTS:
        """Refit with full information: every arm observed in every context (``rewards`` is (n, K))."""
        Xm = np.asarray(X, dtype=np.float64)
        R = np.asarray(rewards, dtype=np.float64)
        if Xm.ndim != 2 or Xm.shape[1] != self.dim or R.shape != (len(Xm), self.n_arms):
            raise ValueError(f"X must be (n, {self.dim}) and rewards (n, {self.n_arms})")
        self.reset()
        gram = Xm.T @ Xm
        A = np.eye(self.dim) * self.alpha + gram
        Ainv = np.linalg.inv(A)
        B = self.alpha * np.stack([self._prior_mean(a) for a in range(self.n_arms)]) + (Xm.T @ R).T
        self.A_[:] = A
        self.Ainv_[:] = Ainv
        self.b_[:] = B
        self.mu_[:] = B @ Ainv.T
        self.n_obs_[:] = len(Xm)
        return self

    def _refresh(self, arm: int) -> None:
        self.Ainv_[arm] = np.linalg.inv(self.A_[arm])
        self.mu_[arm] = self.Ainv_[arm] @ self.b_[arm]

    # -------------------------------------------------------------- inference
    def _index(self, arms: Sequence[int] | None) -> slice | NDArray[np.int64]:
        return slice(None) if arms is None else np.asarray(arms, dtype=np.int64)

    def mean(self, x: ArrayLike, arms: Sequence[int] | None = None) -> Array:
        """Posterior mean quality per arm for one context (shape (K,)) or a batch (shape (n, K))."""
        xv = np.asarray(x, dtype=np.float64)
        return xv @ self.mu_[self._index(arms)].T

    def std(self, x: ArrayLike, arms: Sequence[int] | None = None) -> Array:
        """Posterior standard deviation of the sampled quality per arm for one context, shape (K,)."""
        xv = np.asarray(x, dtype=np.float64).reshape(-1)
        if arms is None:  # one matrix-vector product over the stacked (K·d, d) inverses
            var = (self.Ainv_.reshape(-1, self.dim) @ xv).reshape(-1, self.dim) @ xv
        else:  # per arm, so that no (K, d, d) block is copied
            var = np.array([xv @ self.Ainv_[int(a)] @ xv for a in arms])
        return self.scale * np.sqrt(np.maximum(var, 0.0))

    def sample(self, x: ArrayLike, rng: np.random.Generator, arms: Sequence[int] | None = None) -> Array:
        """One Thompson draw of each arm's quality in context ``x`` (shape (K,)). Does not mutate state."""
        idx = self._index(arms)
        m = self.mean(x, arms)
        return m + self.std(x, arms) * rng.standard_normal(m.shape[0] if isinstance(idx, np.ndarray) else self.n_arms)

    def propensities(self, x: ArrayLike, offsets: ArrayLike | None, rng: np.random.Generator, n_draws: int = 200,
                     arms: Sequence[int] | None = None) -> Array:
        """Monte-Carlo P(argmax = a) of the sampled utility ``quality + offsets`` (offsets: (K,), e.g. minus
        the weighted cost and latency). Returns shape (K,), summing to 1. Does not mutate state."""
        m = self.mean(x, arms)
        s = self.std(x, arms)
        off = np.zeros_like(m) if offsets is None else np.asarray(offsets, dtype=np.float64).reshape(-1)
        draws = m + off + s * rng.standard_normal((int(n_draws), m.shape[0]))
        counts = np.bincount(np.argmax(draws, axis=1), minlength=m.shape[0])
        return counts / counts.sum()

    # ------------------------------------------------------------ persistence
    def to_state(self) -> dict[str, Any]:
        """A versioned, JSON-safe dict of the hyper-parameters and sufficient statistics (A, b)."""
        return {
            "kind": _KIND,
            "version": STATE_VERSION,
            "n_arms": self.n_arms,
            "dim": self.dim,
            "alpha": self.alpha,
            "scale": self.scale,
            "forgetting": self.forgetting,
            "bias_index": self.bias_index,
            "priors": self.priors_.tolist(),
            "n_obs": self.n_obs_.tolist(),
            "A": self.A_.tolist(),
            "b": self.b_.tolist(),
        }

    @classmethod
    def from_state(cls, state: Any) -> LinearTS:
        """Rebuild from :meth:`to_state`. Raises PolicyStateError when the state is corrupt or inconsistent."""
        if not isinstance(state, dict):
            raise PolicyStateError(f"a linear TS state must be a mapping, got {type(state).__name__}")
        if state.get("kind") != _KIND or state.get("version") != STATE_VERSION:
            raise PolicyStateError(
                f"unsupported policy state kind/version {state.get('kind')!r}/{state.get('version')!r}; "
                f"expected {_KIND!r}/{STATE_VERSION}"
            )
        try:
            k, d = int(state["n_arms"]), int(state["dim"])
            model = cls(k, d, state["priors"], alpha=float(state["alpha"]), scale=float(state["scale"]),
                        forgetting=float(state["forgetting"]), bias_index=int(state["bias_index"]))
            A = np.asarray(state["A"], dtype=np.float64)
            b = np.asarray(state["b"], dtype=np.float64)
            n_obs = np.asarray(state["n_obs"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyStateError(f"corrupt linear TS state: {exc}") from exc
        if A.shape != (k, d, d) or b.shape != (k, d) or n_obs.shape != (k,):
            raise PolicyStateError(f"inconsistent shapes A{A.shape} b{b.shape} n_obs{n_obs.shape} for K={k}, d={d}")
        if not (np.isfinite(A).all() and np.isfinite(b).all() and np.isfinite(n_obs).all()):
            raise PolicyStateError("the state holds non-finite numbers")
        if not np.allclose(A, np.swapaxes(A, 1, 2), atol=1e-8 * max(1.0, float(np.abs(A).max()))):
            raise PolicyStateError("a precision matrix is not symmetric")
        try:
            np.linalg.cholesky(A)
        except np.linalg.LinAlgError as exc:
            raise PolicyStateError("a precision matrix is not positive definite") from exc
        model.A_, model.b_, model.n_obs_ = A, b, n_obs
        model.Ainv_ = np.linalg.inv(A)
        model.mu_ = np.einsum("kij,kj->ki", model.Ainv_, b)
        return model

