"""OpenAI wire format: the request schemas the gateway accepts and the bodies it sends back.

Requests are validated once, here, with pydantic in strict mode (no silent coercion of ``"1"`` to ``1``);
the router's ``ChatRequest`` is then built directly from the validated values, so nothing is validated
twice. Responses are built as plain dicts/strings (no pydantic on the way out: it is the hot path).

Routing hints may come as extra body fields (``session_id``, ``weights``, ``strategy``, ``region``,
``prefer_region``, ``task_hint``, ``max_cost_usd``, ``tenant``) or as headers; a body field wins over the
header of the same meaning:

====================================  ======================================================================
request header                        meaning
====================================  ======================================================================
``x-learned-router-weights``          trade-off weights, ``quality=1,cost=0.5,latency=0.1`` (body: ``weights``)
``x-learned-router-session``          session id for sticky experiment assignment (body: ``session_id``)
``x-learned-router-strategy``         routing strategy for this request (body: ``strategy``)
``x-learned-router-tenant``           the tenant, only when authentication is off (body: ``tenant``)
====================================  ======================================================================

Answers carry ``x-learned-router-request-id`` (also on errors), ``x-learned-router-provider``,
``x-learned-router-model`` and, for non-streamed answers, ``x-learned-router-cost-usd``. The body's
``model`` is the served arm (``provider::model``) and a ``learned_router`` object repeats request id,
provider, model, cost and strategy (in the final usage chunk of a stream).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from learned_router.errors import RequestError
from learned_router.types import ChatRequest, Completion, Weights

__all__ = [
    "HEADER_COST",
    "HEADER_PROVIDER",
    "HEADER_REQUEST_ID",
    "HEADER_SESSION",
    "HEADER_STRATEGY",
    "HEADER_TENANT",
    "HEADER_WEIGHTS",
    "ChatCompletionRequest",
    "FeedbackRequest",
    "WireError",
    "completion_body",
    "parse_chat_request",
    "parse_feedback",
    "parse_weights_header",
]

HEADER_REQUEST_ID = "x-learned-router-request-id"
HEADER_PROVIDER = "x-learned-router-provider"
HEADER_MODEL = "x-learned-router-model"
HEADER_COST = "x-learned-router-cost-usd"
HEADER_WEIGHTS = "x-learned-router-weights"
HEADER_SESSION = "x-learned-router-session"
HEADER_TENANT = "x-learned-router-tenant"
HEADER_STRATEGY = "x-learned-router-strategy"


class WireError(Exception):
    """A request that does not fit the wire schema. ``status`` is 400 (not JSON) or 422 (wrong shape)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str = "invalid_request") -> None:
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        super().__init__(message)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ContentPart(BaseModel):
    """One part of a multi-part message content (``text``, ``image_url``, ...); extra keys are kept."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str = Field(min_length=1)


class Message(BaseModel):
    """One chat message. Unknown keys (``name``, ``tool_calls``, ``refusal``...) are allowed and passed on."""

    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Wire):
    include_usage: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["text", "json_object", "json_schema"]


class RouterWeights(_Wire):
    quality: float | None = Field(default=None, ge=0)
    cost: float | None = Field(default=None, ge=0)
    latency: float | None = Field(default=None, ge=0)


# OpenAI sampling parameters forwarded to the provider unchanged (through ``ChatRequest.extra``).
_PASSTHROUGH = ("top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "user", "logit_bias")


class ChatCompletionRequest(_Wire):
    """``POST /v1/chat/completions`` body: the OpenAI fields this gateway supports plus routing hints.

    Unknown top-level fields are rejected (422) rather than silently ignored, as OpenAI itself does.
    Tool calling, ``n > 1`` and log-probabilities are not supported and are rejected with a message.
    """

    model: str = Field(default="auto", min_length=1)
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    n: int | None = Field(default=None, ge=1, le=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    # routing hints (extensions)
    session_id: str | None = Field(default=None, min_length=1)
    tenant: str | None = Field(default=None, min_length=1)
    weights: RouterWeights | None = None
    strategy: str | None = Field(default=None, min_length=1)
    region: str | None = Field(default=None, min_length=1)
    prefer_region: str | None = Field(default=None, min_length=1)
    task_hint: str | None = Field(default=None, min_length=1)
    max_cost_usd: float | None = Field(default=None, ge=0)


class FeedbackRequest(_Wire):
    """``POST /v1/feedback`` body."""

    request_id: str = Field(min_length=1, max_length=200)
    quality: float = Field(ge=0, le=1)
    source: str = Field(default="user", min_length=1, max_length=64)


_UNSUPPORTED = {
    "tools": "tool calling is not supported by this gateway",
    "tool_choice": "tool calling is not supported by this gateway",
    "functions": "function calling is not supported by this gateway",
    "function_call": "function calling is not supported by this gateway",
    "parallel_tool_calls": "tool calling is not supported by this gateway",
    "logprobs": "log-probabilities are not supported by this gateway",
    "top_logprobs": "log-probabilities are not supported by this gateway",
    "audio": "audio output is not supported by this gateway",
    "modalities": "only text output is supported by this gateway",
}


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "function-after"})


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None


def _object(body: bytes) -> dict[str, Any]:
    data = _loads(body)
    if not isinstance(data, dict):
        raise WireError(400, f"the request body must be a JSON object, got {type(data).__name__}",
                        code="invalid_json")
    return data


def _validation_error(exc: ValidationError) -> WireError:
    err = exc.errors(include_url=False)[0]
    # Drop the union-member tags pydantic adds to locations (``content.str``, ``stop.list[str]``).
    loc = [p for p in err.get("loc", ()) if isinstance(p, int) or ("[" not in p and p not in _TYPE_TAGS)]
    param = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        msg = "unrecognized request argument"
    elif kind == "missing":
        msg = "is required"
    else:
        msg = err.get("msg", "is invalid")
    return WireError(422, f"invalid value for '{param}': {msg}" if param else msg, param or None,
                     code="invalid_value" if kind != "extra_forbidden" else "unknown_parameter")


def parse_weights_header(value: str) -> Weights:
    """``quality=1,cost=0.5,latency=0.1`` → Weights (missing names keep their defaults).

    Raises:
        RequestError: a malformed pair, an unknown name or a negative/non-numeric value.
    """
    parsed: dict[str, float] = {}
    for pair in value.split(","):
        pair = pair.strip()
        if not pair:
            continue
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or name not in ("quality", "cost", "latency"):
            raise RequestError(HEADER_WEIGHTS, "expected name=value pairs with names quality, cost, latency, "
                                               f"e.g. 'quality=1,cost=0.5'; got {pair!r}")
        try:
            number = float(raw)
        except ValueError:
            raise RequestError(HEADER_WEIGHTS, f"'{name}' must be a number, got {raw.strip()!r}") from None
        if not number >= 0 or number == float("inf"):
            raise RequestError(HEADER_WEIGHTS, f"'{name}' must be a finite non-negative number, got {raw.strip()}")
        parsed[name] = number
    if not parsed:
        raise RequestError(HEADER_WEIGHTS, "is empty")
    return Weights(**parsed)


def parse_chat_request(body: bytes, headers: Mapping[str, str], *, request_id: str,
                       tenant: str | None) -> ChatRequest:
    """Validate a chat-completions body (plus routing headers) and build the router's request.

    Args:
        body: the raw request body.
        headers: the HTTP headers (lower-case names).
        request_id: the id the gateway assigned.
        tenant: the authenticated tenant, or None when authentication is off (then the ``tenant`` field or
            header is used as given). With authentication on, naming another tenant is refused (403).

    Raises:
        WireError: not JSON (400), another tenant named (403) or not the expected shape (422).
        RequestError: a routing header is malformed.
    """
    data = _object(body)
    for key, why in _UNSUPPORTED.items():
        if key in data:
            raise WireError(422, f"'{key}': {why}", key, code="unsupported_parameter")
    try:
        wire = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    for i, m in enumerate(wire.messages):
        if m.content is None and m.role != "assistant":
            raise WireError(422, f"invalid value for 'messages[{i}].content': is required",
                            f"messages[{i}].content", code="invalid_value")
    extra: dict[str, Any] = {k: data[k] for k in _PASSTHROUGH if data.get(k) is not None}
    if wire.response_format is not None and wire.response_format.type == "json_schema":
        extra["response_format"] = data["response_format"]
    weights: Weights | None = None
    if wire.weights is not None:
        weights = Weights(**wire.weights.model_dump(exclude_none=True))
    elif HEADER_WEIGHTS in headers:
        weights = parse_weights_header(headers[HEADER_WEIGHTS])
    max_tokens = wire.max_completion_tokens or wire.max_tokens
    named = wire.tenant or headers.get(HEADER_TENANT) or None
    if tenant is not None and named is not None and named != tenant:
        raise WireError(403, "the request names a tenant other than the one its API key belongs to",
                        "tenant", code="tenant_mismatch")
    return ChatRequest(
        messages=tuple(data["messages"]),
        request_id=request_id,
        tenant=tenant if tenant is not None else named,
        session_id=wire.session_id or headers.get(HEADER_SESSION) or None,
        region=wire.region,
        prefer_region=wire.prefer_region,
        task_hint=wire.task_hint,
        max_cost_usd=wire.max_cost_usd,
        weights=weights,
        max_tokens=max_tokens,
        temperature=wire.temperature,
        stream=bool(wire.stream),
        json_mode=wire.response_format is not None and wire.response_format.type != "text",
        model=wire.model,
        strategy=wire.strategy or headers.get(HEADER_STRATEGY) or None,
        extra=extra,
    )


def parse_feedback(body: bytes) -> FeedbackRequest:
    """Validate a feedback body. Raises WireError (400/422)."""
    data = _object(body)
    try:
        return FeedbackRequest.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}


def completion_body(c: Completion) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object for a routed completion. ``model`` is the served arm
    (``provider::model``), which can be sent back as ``model`` to pin the same arm."""
    return {
        "id": f"chatcmpl-{c.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": f"{c.provider}::{c.model}",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": c.text},
            "finish_reason": c.finish_reason or "stop",
            "logprobs": None,
        }],
        "usage": _usage(c.input_tokens, c.output_tokens),
        "learned_router": {
            "request_id": c.request_id, "provider": c.provider, "model": c.model, "cost_usd": c.cost_usd,
            "strategy": c.decision.strategy,
        },
    }


class ChunkWriter:
    """Encodes the SSE events of one streamed completion (OpenAI ``chat.completion.chunk`` format).

    The prefix common to every chunk is serialised once; each text delta costs one ``json.dumps`` of the
    text. ``finish_reason`` is only ever sent by ``final`` (after the upstream stream ended cleanly), so an
    answer cut short never looks complete.
    """

    def __init__(self, request_id: str, arm: str) -> None:
        created = int(time.time())
        self.request_id = request_id
        self._head = ('data: {"id":' + json.dumps(f"chatcmpl-{request_id}") + ',"object":"chat.completion.chunk",'
                      f'"created":{created},"model":' + json.dumps(arm))
        self._first = True

    def delta(self, text: str) -> bytes:
        role = '"role":"assistant",' if self._first else ""
        self._first = False
        return (self._head + ',"choices":[{"index":0,"delta":{' + role + '"content":' + json.dumps(text)
                + '},"finish_reason":null,"logprobs":null}]}\n\n').encode()

    def final(self, c: Completion) -> bytes:
        """The closing events: the finish_reason chunk, the usage chunk (``choices: []``) and ``[DONE]``."""
        role = '"role":"assistant"' if self._first else ""
        finish = json.dumps(c.finish_reason or "stop")
        extension = json.dumps({"request_id": c.request_id, "provider": c.provider, "model": c.model,
                                "cost_usd": c.cost_usd, "strategy": c.decision.strategy})
        return (self._head + ',"choices":[{"index":0,"delta":{' + role + '},"finish_reason":' + finish
                + ',"logprobs":null}]}\n\n'
                + self._head + ',"choices":[],"usage":' + json.dumps(_usage(c.input_tokens, c.output_tokens))
                + ',"learned_router":' + extension + '}\n\n'
                + 'data: [DONE]\n\n').encode()


def sse_error(body: Mapping[str, Any]) -> bytes:
    """An SSE event carrying an OpenAI error object; the stream ends after it, without ``[DONE]``."""
    return b"data: " + json.dumps(body).encode() + b"\n\n"
