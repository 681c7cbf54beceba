"""Value types that flow through the router: requests, decisions, attempts, outcomes, completions.

All are frozen dataclasses; pydantic is used only at the edges (config and wire schemas).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NewType

from learned_router.errors import RequestError

__all__ = [
    "ArmId",
    "Attempt",
    "ChatRequest",
    "Completion",
    "Decision",
    "Outcome",
    "StreamChunk",
    "Weights",
    "arm_id",
    "split_arm",
]

ArmId = NewType("ArmId", str)
"""One provider+model pair, spelled ``"provider::model"``."""


def arm_id(provider: str, model: str) -> ArmId:
    return ArmId(f"{provider}::{model}")


def split_arm(arm: str) -> tuple[str, str]:
    provider, _, model = arm.partition("::")
    return provider, model


_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
_REQUEST_KEYS = frozenset(
    {
        "messages", "request_id", "tenant", "session_id", "region", "prefer_region", "task_hint",
        "max_cost_usd", "weights", "max_tokens", "temperature", "stream", "json_mode", "model",
        "strategy", "extra",
    }
)


@dataclass(frozen=True, slots=True)
class Weights:
    """Trade-off weights. ``quality`` scales predicted quality; ``cost`` is per USD per 1k requests'
    worth of tokens (see the strategy docs); ``latency`` is per second."""

    quality: float = 1.0
    cost: float = 0.0
    latency: float = 0.0

    @classmethod
    def parse(cls, value: Any, field_name: str = "weights") -> Weights:
        if isinstance(value, Weights):
            return value
        if not isinstance(value, Mapping):
            raise RequestError(field_name, f"expected a mapping of quality/cost/latency, got {type(value).__name__}")
        unknown = set(value) - {"quality", "cost", "latency"}
        if unknown:
            raise RequestError(field_name, f"unknown keys {sorted(unknown)}; allowed: quality, cost, latency")
        out: dict[str, float] = {}
        for key, raw in value.items():
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0 or raw != raw:
                raise RequestError(f"{field_name}.{key}", f"must be a non-negative number, got {raw!r}")
            out[key] = float(raw)
        return cls(**out)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """An OpenAI-style chat request plus routing hints.

    Attributes:
        messages: OpenAI-style messages, each a mapping with ``role`` and ``content``.
        request_id: unique id; generated when absent.
        tenant, session_id: who asks; the session id makes experiment assignment sticky.
        region: a *required* region (data residency): only providers in it may serve.
        prefer_region: a preferred region: providers there rank first among equals.
        task_hint: a task name that overrides the classifier for the ``task`` strategy.
        max_cost_usd: a cost ceiling for this one request (estimated before the call).
        weights: per-request trade-off weights (else the tenant's, else the config's).
        model: a routing preset (``auto``, ``auto-cheap``) or a specific arm/provider name.
    """

    messages: tuple[Mapping[str, Any], ...]
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tenant: str | None = None
    session_id: str | None = None
    region: str | None = None
    prefer_region: str | None = None
    task_hint: str | None = None
    max_cost_usd: float | None = None
    weights: Weights | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    json_mode: bool = False
    model: str | None = None
    strategy: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # prompt_text() memoised: routing reads it three times per request (tokens, embedding, log)
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def coerce(cls, value: ChatRequest | Mapping[str, Any]) -> ChatRequest:
        """Accept a ChatRequest or a dict; raise RequestError naming the bad field."""
        if isinstance(value, ChatRequest):
            return value
        if not isinstance(value, Mapping):
            raise RequestError("", f"a request must be a mapping, got {type(value).__name__}")
        unknown = set(value) - _REQUEST_KEYS
        if unknown:
            raise RequestError(sorted(unknown)[0], f"unknown field; allowed: {sorted(_REQUEST_KEYS)}")
        messages = _check_messages(value.get("messages"))
        kwargs: dict[str, Any] = {"messages": messages}
        for key in ("request_id", "tenant", "session_id", "region", "prefer_region", "task_hint", "model",
                    "strategy"):
            raw = value.get(key)
            if raw is not None:
                if not isinstance(raw, str) or not raw:
                    raise RequestError(key, f"must be a non-empty string, got {raw!r}")
                kwargs[key] = raw
        for key in ("max_cost_usd", "temperature"):
            raw = value.get(key)
            if raw is not None:
                if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
                    raise RequestError(key, f"must be a non-negative number, got {raw!r}")
                kwargs[key] = float(raw)
        raw = value.get("max_tokens")
        if raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
                raise RequestError("max_tokens", f"must be a positive integer, got {raw!r}")
            kwargs["max_tokens"] = raw
        for key in ("stream", "json_mode"):
            raw = value.get(key)
            if raw is not None:
                if not isinstance(raw, bool):
                    raise RequestError(key, f"must be true or false, got {raw!r}")
                kwargs[key] = raw
        if value.get("weights") is not None:
            kwargs["weights"] = Weights.parse(value["weights"])
        if value.get("extra") is not None:
            if not isinstance(value["extra"], Mapping):
                raise RequestError("extra", "must be a mapping")
            kwargs["extra"] = dict(value["extra"])
        return cls(**kwargs)

    def prompt_text(self) -> str:
        """The text of every message, joined; what the embedder and the token estimate see."""
        if self._text is not None:
            return self._text
        parts: list[str] = []
        for m in self.messages:
            content = m.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, Sequence):
                parts.extend(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        text = "\n".join(parts)
        object.__setattr__(self, "_text", text)  # a cache of a pure function of the frozen fields
        return text

    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                return str(m["content"])
        return self.prompt_text()

    def with_id(self, request_id: str) -> ChatRequest:
        return replace(self, request_id=request_id)


def _check_messages(raw: Any) -> tuple[Mapping[str, Any], ...]:
    if raw is None:
        raise RequestError("messages", "is required")
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise RequestError("messages", "must be a list of {role, content} objects")
    if not raw:
        raise RequestError("messages", "must not be empty")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping):
            raise RequestError(f"messages[{i}]", "must be an object with role and content")
        role = m.get("role")
        if role not in _ROLES:
            raise RequestError(f"messages[{i}].role", f"must be one of {sorted(_ROLES)}, got {role!r}")
        content = m.get("content")
        if content is None and role != "assistant":
            raise RequestError(f"messages[{i}].content", "is required")
        if content is not None and not isinstance(content, str | list):
            raise RequestError(f"messages[{i}].content", "must be a string or a list of content parts")
        out.append(dict(m))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the router decided for one request, before any call.

    ``ranking`` is the failover order; ``scores`` the strategy's score per ranked arm (higher is better);
    ``propensities`` the probability that each eligible arm would have been chosen first;
    ``excluded`` maps each excluded arm to the reason; ``fallback_reason`` is set when the configured
    policy could not decide and a rule strategy did.
    """

    request_id: str
    arm: ArmId
    provider: str
    model: str
    strategy: str
    ranking: tuple[ArmId, ...]
    scores: Mapping[str, float]
    propensities: Mapping[str, float]
    excluded: Mapping[str, str]
    fallback_reason: str | None = None
    policy_version: str = ""
    experiment: str | None = None
    variant: str | None = None
    assignment_p: float | None = None
    task_probs: Mapping[str, float] = field(default_factory=dict)
    input_tokens_est: int = 0
    output_tokens_est: int = 0
    est_cost_usd: Mapping[str, float] = field(default_factory=dict)
    weights: Weights | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "provider": self.provider,
            "model": self.model,
            "arm": self.arm,
            "strategy": self.strategy,
            "ranking": list(self.ranking),
            "scores": dict(self.scores),
            "propensities": dict(self.propensities),
            "excluded": dict(self.excluded),
            "fallback_reason": self.fallback_reason,
            "policy_version": self.policy_version,
            "experiment": self.experiment,
            "variant": self.variant,
            "task_probs": dict(self.task_probs),
            "input_tokens_est": self.input_tokens_est,
            "output_tokens_est": self.output_tokens_est,
            "est_cost_usd": dict(self.est_cost_usd),
        }


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider call inside ``complete``."""

    arm: ArmId
    status: str  # "ok" or "error"
    latency_s: float
    error_kind: str | None = None
    message: str = ""
    retryable: bool | None = None
    status_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm, "status": self.status, "latency_s": self.latency_s, "error_kind": self.error_kind,
            "message": self.message, "retryable": self.retryable, "status_code": self.status_code,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened when the decision was carried out."""

    request_id: str
    attempts: tuple[Attempt, ...]
    served_arm: ArmId | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    ttft_s: float | None = None
    error_kind: str | None = None
    quality: float | None = None
    quality_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "attempts": [a.to_dict() for a in self.attempts],
            "served_arm": self.served_arm, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd, "latency_s": self.latency_s, "ttft_s": self.ttft_s,
            "error_kind": self.error_kind, "quality": self.quality, "quality_source": self.quality_source,
        }


@dataclass(frozen=True, slots=True)
class ProviderReply:
    """A provider's parsed answer (before cost is attached)."""

    text: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One piece of a streamed answer. The last chunk carries usage and ``finish_reason``."""

    text: str = ""
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """The answer of ``Router.complete``."""

    request_id: str
    provider: str
    model: str
    text: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    decision: Decision
    outcome: Outcome
    ttft_s: float | None = None

    @property
    def arm(self) -> ArmId:
        return arm_id(self.provider, self.model)
