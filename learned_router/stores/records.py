"""The versioned decision record: one per request, the input of training, analytics and experiments.

A record holds what the router knew (features, eligible arms with exclusion reasons, scores, propensities),
what it chose (the first arm of the ranking), what happened (every attempt, the served arm, tokens, cost,
latency) and, when it arrives, feedback (quality, source, time). ``to_row`` gives a JSON-safe dict (the
embedding as float16 bytes); ``from_row`` reads rows of this and every older schema version.

Schema history:

* 1: the first release (no ``assignment_p``, ``weights``, ``ttft_s``, ``breaker_trips``, ``kind``).
* 2: adds those fields and ``task_label`` (a known task: the request's task hint or a dataset label, used to
  refit the task classifier); rows of version 1 read with their defaults.
* 3: adds ``embedder``, the name of the embedder that produced ``embedding`` (None in older rows).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from learned_router.types import Decision, Outcome, Weights

__all__ = ["SCHEMA_VERSION", "DecisionRecord", "decode_embedding", "encode_embedding"]

SCHEMA_VERSION = 3


def encode_embedding(vector: ArrayLike | None) -> bytes | None:
    """A vector as little-endian float16 bytes (2 bytes per dimension), or None."""
    if vector is None:
        return None
    return np.asarray(vector, dtype="<f2").reshape(-1).tobytes()


def decode_embedding(blob: bytes | None) -> NDArray[np.float32] | None:
    """The inverse of :func:`encode_embedding`, as float32."""
    if blob is None:
        return None
    return np.frombuffer(blob, dtype="<f2").astype(np.float32)


@dataclass(slots=True)
class DecisionRecord:
    """One logged request. Times are Unix seconds; money is USD; durations are seconds.

    ``chosen_arm`` is the arm the policy put first (its propensity is ``propensities[chosen_arm]``);
    ``served_arm`` is the arm that answered (after failover, or None when every attempt failed).
    ``eligible`` lists the arms offered to the policy, in ranking order; ``excluded`` maps every other arm
    to the reason. ``kind`` is ``"decision"`` or ``"refusal"`` (no arm was eligible; nothing was called).
    """

    request_id: str
    ts: float = 0.0
    schema_version: int = SCHEMA_VERSION
    kind: str = "decision"
    tenant: str | None = None
    session_id: str | None = None
    policy: str = ""
    policy_version: str = ""
    fallback_reason: str | None = None
    experiment: str | None = None
    variant: str | None = None
    assignment_p: float | None = None
    task_probs: dict[str, float] = field(default_factory=dict)
    task_label: str | None = None
    embedding: bytes | None = None
    embedder: str | None = None
    input_tokens_est: int = 0
    output_tokens_est: int = 0
    eligible: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    propensities: dict[str, float] = field(default_factory=dict)
    est_cost_usd: dict[str, float] = field(default_factory=dict)
    chosen_arm: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    served_arm: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    ttft_s: float | None = None
    error_kind: str | None = None
    breaker_trips: list[str] = field(default_factory=list)
    prompt: str | None = None
    weights: dict[str, float] | None = None
    quality: float | None = None
    quality_source: str | None = None
    feedback_ts: float | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_decision(cls, decision: Decision, outcome: Outcome | None = None, *,
                      embedding: ArrayLike | None = None, prompt: str | None = None, tenant: str | None = None,
                      session_id: str | None = None, ts: float | None = None,
                      breaker_trips: Sequence[str] = (), task_label: str | None = None,
                      embedder: str | None = None) -> DecisionRecord:
        """Build a record from the router's Decision and (optionally) its Outcome.

        Args:
            embedding: the prompt embedding, stored as float16 (pass None to store none).
            prompt: the prompt text; pass it only when the configuration allows storing prompts.
            tenant, session_id: who asked (from the request).
            ts: the decision time in Unix seconds (default: now).
            breaker_trips: arms whose circuit breaker this request opened.
            task_label: the request's known task (a task hint or a dataset label), if any.
            embedder: the name of the embedder that produced ``embedding``.
        """
        propensities = {str(k): float(v) for k, v in decision.propensities.items()}
        rec = cls(
            request_id=decision.request_id, ts=time.time() if ts is None else float(ts), tenant=tenant,
            session_id=session_id, policy=decision.strategy, policy_version=decision.policy_version,
            fallback_reason=decision.fallback_reason, experiment=decision.experiment, variant=decision.variant,
            assignment_p=decision.assignment_p,
            task_probs={str(k): float(v) for k, v in decision.task_probs.items()}, task_label=task_label,
            embedding=encode_embedding(embedding), embedder=embedder if embedding is not None else None,
            input_tokens_est=int(decision.input_tokens_est),
            output_tokens_est=int(decision.output_tokens_est), eligible=[str(a) for a in decision.ranking],
            excluded={str(k): str(v) for k, v in decision.excluded.items()},
            scores={str(k): float(v) for k, v in decision.scores.items()}, propensities=propensities,
            est_cost_usd={str(k): float(v) for k, v in decision.est_cost_usd.items()},
            chosen_arm=str(decision.arm), prompt=prompt, breaker_trips=[str(a) for a in breaker_trips],
            weights=None if decision.weights is None else _weights_dict(decision.weights),
        )
        if outcome is not None:
            rec.attempts = [a.to_dict() for a in outcome.attempts]
            rec.served_arm = None if outcome.served_arm is None else str(outcome.served_arm)
            rec.input_tokens, rec.output_tokens = int(outcome.input_tokens), int(outcome.output_tokens)
            rec.cost_usd, rec.latency_s = float(outcome.cost_usd), float(outcome.latency_s)
            rec.ttft_s, rec.error_kind = outcome.ttft_s, outcome.error_kind
            if outcome.quality is not None:
                rec.quality, rec.quality_source = float(outcome.quality), outcome.quality_source or "outcome"
                rec.feedback_ts = rec.ts
        return rec

    # ------------------------------------------------------------------ reading
    @property
    def propensity(self) -> float | None:
        """The logged probability of the chosen arm (None when not logged)."""
        if self.chosen_arm is None:
            return None
        p = self.propensities.get(self.chosen_arm)
        return None if p is None else float(p)

    def embedding_array(self) -> NDArray[np.float32] | None:
        return decode_embedding(self.embedding)

    def with_feedback(self, quality: float, source: str, ts: float) -> DecisionRecord:
        rec = DecisionRecord(**self.to_row())
        rec.quality, rec.quality_source, rec.feedback_ts = float(quality), source, float(ts)
        return rec

    # ------------------------------------------------------------------ rows
    def to_row(self) -> dict[str, Any]:
        """A plain dict of every field (``embedding`` stays bytes); the inverse of :meth:`from_row`.
        Shallow: nested mappings and lists are shared with the record."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DecisionRecord:
        """Read a row of any known schema version; unknown keys are ignored, missing ones defaulted.

        Raises:
            ValueError: the row has no ``request_id`` or a schema version newer than this library knows.
        """
        version = int(row.get("schema_version") or 1)
        if version > SCHEMA_VERSION:
            raise ValueError(f"decision record schema {version} is newer than this library's {SCHEMA_VERSION}; "
                             "upgrade learned-router to read it")
        if not row.get("request_id"):
            raise ValueError("a decision record needs a request_id")
        data = {k: v for k, v in row.items() if k in _FIELD_SET and v is not None}
        if version == 1 and "chosen_arm" not in data and row.get("arm"):
            data["chosen_arm"] = row["arm"]
        data["schema_version"] = SCHEMA_VERSION
        emb = data.get("embedding")
        if isinstance(emb, memoryview | bytearray):
            data["embedding"] = bytes(emb)
        return cls(**data)


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(DecisionRecord))
_FIELD_SET = frozenset(_FIELD_NAMES)


def _weights_dict(w: Weights) -> dict[str, float]:
    return {"quality": w.quality, "cost": w.cost, "latency": w.latency}
