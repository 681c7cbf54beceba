"""Reading a decision log into the arrays that training and off-policy evaluation need.

Only decisions with an embedding, a chosen arm and a positive logged propensity are usable; the rest are
counted and reported (``LoggedData.skipped``). Rows are in log order.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from learned_router.stores import DecisionRecord

__all__ = ["LogError", "LoggedData", "load_logged"]

Array = NDArray[np.float64]


class LogError(ValueError):
    """The decision log cannot be trained on (empty, too small, inconsistent); the message says why."""


@dataclass
class LoggedData:
    """Logged decisions as arrays. K arms in ``arms`` order; n usable decisions.

    ``eligible`` (n, K) marks the arms offered; ``logged_probs`` (n, K) the logged propensities; ``action`` the
    chosen arm; ``served`` the arm that answered (-1: none); ``quality`` is NaN without feedback;
    ``est_cost`` (n, K) the predicted cost per arm (NaN when not logged); ``weights`` (n, 3) quality, cost,
    latency weights.
    """

    arms: list[str]
    request_ids: list[str]
    embeddings: NDArray[np.float32]
    input_tokens: Array
    task_labels: list[str]
    task_probs: Array
    task_label: list[str | None]
    eligible: NDArray[np.bool_]
    logged_probs: Array
    action: NDArray[np.int64]
    served: NDArray[np.int64]
    quality: Array
    cost_usd: Array
    latency_s: Array
    est_cost: Array
    weights: Array
    policies: Counter[str] = field(default_factory=Counter)
    skipped: dict[str, int] = field(default_factory=dict)
    embedder: str | None = None  # the embedder the log's embeddings came from (None: logged before schema 3)

    @property
    def n(self) -> int:
        return len(self.action)

    @property
    def propensity(self) -> Array:
        return self.logged_probs[np.arange(self.n), self.action]

    @property
    def has_quality(self) -> NDArray[np.bool_]:
        return ~np.isnan(self.quality)

    def utility(self) -> Array:
        """Logged utility per decision (NaN without quality feedback)."""
        return self.weights[:, 0] * self.quality - self.weights[:, 1] * self.cost_usd * 1000.0 \
            - self.weights[:, 2] * self.latency_s

    def arm_latency(self) -> Array:
        """Mean logged latency per arm (seconds); arms never served get the overall mean."""
        out = np.full(len(self.arms), float(self.latency_s.mean()) if self.n else 1.0)
        for j in range(len(self.arms)):
            sel = self.served == j
            if sel.any():
                out[j] = float(self.latency_s[sel].mean())
        return out

    def filled_est_cost(self) -> Array:
        """``est_cost`` with missing cells filled by the arm's mean logged cost."""
        est = self.est_cost.copy()
        for j in range(len(self.arms)):
            col = est[:, j]
            fallback = self.cost_usd[self.served == j].mean() if (self.served == j).any() else np.nanmean(est)
            col[np.isnan(col)] = 0.0 if np.isnan(fallback) else fallback
        return est

    def holdout_mask(self, fraction: float, seed: int) -> NDArray[np.bool_]:
        """A deterministic split by a hash of (seed, request id): True for the evaluation rows."""
        cut = int(fraction * 2**32)
        return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{rid}".encode(), digest_size=4).digest(), "big")
                         < cut for rid in self.request_ids], dtype=bool)


def load_logged(records: Iterable[DecisionRecord], *, default_weights: tuple[float, float, float] = (1.0, 0.05, 0.05),
                on_progress: Callable[[int], None] | None = None) -> LoggedData:
    """Read decisions into a :class:`LoggedData`.

    Raises:
        LogError: no usable decision, or embeddings of different sizes or from different embedders in one log.
    """
    skipped: Counter[str] = Counter()
    rows: list[tuple[Any, ...]] = []
    arm_index: dict[str, int] = {}
    task_set: set[str] = set()
    dim: int | None = None
    embedder: str | None = None
    for i, rec in enumerate(records):
        if on_progress is not None and i % 5000 == 0:
            on_progress(i)
        if rec.kind != "decision" or rec.chosen_arm is None:
            skipped["no chosen arm"] += 1
            continue
        if rec.embedding is None:
            skipped["no embedding"] += 1
            continue
        p = rec.propensities.get(rec.chosen_arm)
        if p is None or not p > 0:
            skipped["no propensity for the chosen arm"] += 1
            continue
        d = len(rec.embedding) // 2
        if dim is None:
            dim = d
        elif d != dim:
            raise LogError(f"record {rec.request_id} has a {d}-dimensional embedding, earlier ones {dim}: the log "
                           "mixes embedders; train on one embedder's records (filter by time with --since)")
        if rec.embedder is not None:
            if embedder is None:
                embedder = rec.embedder
            elif rec.embedder != embedder:
                raise LogError(f"record {rec.request_id} was embedded by {rec.embedder!r}, earlier ones by "
                               f"{embedder!r}: train on one embedder's records (filter by time with --since)")
        for a in (*rec.eligible, *rec.propensities, rec.chosen_arm):
            arm_index.setdefault(a, len(arm_index))
        if rec.served_arm is not None:
            arm_index.setdefault(rec.served_arm, len(arm_index))
        task_set.update(rec.task_probs)
        rows.append((rec.request_id, rec.embedding, rec.input_tokens_est or rec.input_tokens, rec.task_probs,
                     rec.task_label, rec.eligible, rec.propensities, rec.chosen_arm, rec.served_arm, rec.quality,
                     rec.cost_usd, rec.latency_s, rec.est_cost_usd, rec.weights, rec.policy))
    if not rows:
        reasons = ", ".join(f"{k}: {v}" for k, v in skipped.items()) or "the log is empty"
        raise LogError(f"no usable decisions in the log ({reasons})")
    data = _to_arrays(rows, arm_index, sorted(task_set), dim or 0, default_weights, dict(skipped))
    data.embedder = embedder
    return data


def _to_arrays(rows: list[tuple[Any, ...]], arm_index: dict[str, int], task_labels: list[str], dim: int,
               default_weights: tuple[float, float, float], skipped: dict[str, int]) -> LoggedData:
    n, k = len(rows), len(arm_index)
    emb = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f2").reshape(n, dim).astype(np.float32)
    t_index = {t: j for j, t in enumerate(task_labels)}
    task_probs = np.zeros((n, len(task_labels)))
    eligible = np.zeros((n, k), dtype=bool)
    logged = np.zeros((n, k))
    est = np.full((n, k), np.nan)
    weights = np.tile(np.asarray(default_weights, dtype=np.float64), (n, 1))
    action = np.empty(n, dtype=np.int64)
    served = np.full(n, -1, dtype=np.int64)
    quality = np.full(n, np.nan)
    policies: Counter[str] = Counter()
    for i, (_, _, _, tp, _, elig, props, chosen, srv, q, _, _, ec, w, pol) in enumerate(rows):
        for t, v in tp.items():
            task_probs[i, t_index[t]] = v
        for a in elig or props:
            eligible[i, arm_index[a]] = True
        for a, v in props.items():
            logged[i, arm_index[a]] = v
        for a, v in ec.items():
            if a in arm_index:
                est[i, arm_index[a]] = v
        action[i] = arm_index[chosen]
        eligible[i, action[i]] = True
        if srv is not None:
            served[i] = arm_index[srv]
        if q is not None:
            quality[i] = q
        if w:
            weights[i] = (w.get("quality", 1.0), w.get("cost", 0.0), w.get("latency", 0.0))
        policies[pol] += 1
    return LoggedData(
        arms=list(arm_index), request_ids=[r[0] for r in rows], embeddings=emb,
        input_tokens=np.array([float(r[2]) for r in rows]), task_labels=task_labels, task_probs=task_probs,
        task_label=[r[4] for r in rows], eligible=eligible, logged_probs=logged, action=action, served=served,
        quality=quality, cost_usd=np.array([float(r[10]) for r in rows]),
        latency_s=np.array([float(r[11]) for r in rows]), est_cost=est, weights=weights, policies=policies,
        skipped=skipped,
    )
