"""Adapter for Anthropic's Messages API (``POST {base_url}/v1/messages``).

System (and developer) messages go to the top-level ``system`` field; the key travels in ``x-api-key``;
``max_tokens`` is required by the API, so 1024 is sent when the caller gives none. ``json_mode`` has no
API switch here: it adds an instruction to the system prompt. Stop reasons are mapped to OpenAI's names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from learned_router.errors import ProviderError, ProviderResponseError, ProviderUnavailable
from learned_router.providers.base import (
    endpoint_url,
    SSEEvent,
    classify_http_error,
    content_text,
    error_message,
    estimate_tokens,
    json_body,
    parse_sse,
    request_json,
    response_error,
    stream_ended_early,
)
from learned_router.types import ChatRequest, ProviderReply, StreamChunk

__all__ = ["ANTHROPIC_VERSION", "AnthropicAdapter", "AnthropicStreamParser"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
_JSON_INSTRUCTION = "Respond only with a single valid JSON object and nothing else."
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                 "refusal": "content_filter", "pause_turn": "stop"}
_SYSTEM_ROLES = frozenset({"system", "developer"})


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _content(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": content_text([p])} for p in content or ()
            if isinstance(p, Mapping) and p.get("type", "text") == "text"]


def _finish(reason: Any) -> str | None:
    return _STOP_REASONS.get(reason, reason) if isinstance(reason, str) else None


def _prompt_chars(body: Any) -> str:
    if not isinstance(body, Mapping):
        return ""
    parts = [body["system"]] if isinstance(body.get("system"), str) else []
    for m in body.get("messages") or ():
        if isinstance(m, Mapping):
            parts.append(content_text(m.get("content")))
    return "\n".join(parts)


def _usage_in(usage: Mapping[str, Any]) -> int | None:
    base = _int(usage.get("input_tokens"))
    if base is None:
        return None
    return base + (_int(usage.get("cache_creation_input_tokens")) or 0) + (
        _int(usage.get("cache_read_input_tokens")) or 0)


class AnthropicStreamParser:
    """Messages-API events: ``message_start`` (input usage), ``content_block_delta`` (text),
    ``message_delta`` (stop reason, output usage), ``message_stop`` (the end), ``error``; ``ping`` and
    block start/stop events carry nothing we need."""

    def __init__(self) -> None:
        self.done = False
        self.finish: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        obj = event.json()
        kind = obj.get("type", event.event)
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, Mapping) and delta.get("type") == "text_delta" and delta.get("text"):
                return [StreamChunk(text=str(delta["text"]))]
        elif kind == "message_start":
            message = obj.get("message")
            self._usage(message.get("usage") if isinstance(message, Mapping) else None)
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, Mapping) and delta.get("stop_reason"):
                self.finish = _finish(delta["stop_reason"])
            self._usage(obj.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            err = obj.get("error") if isinstance(obj.get("error"), Mapping) else {}
            msg = f"error event in stream: {error_message(event.data.encode())}"
            if err.get("type") in ("overloaded_error", "api_error", "rate_limit_error"):
                raise ProviderUnavailable(msg)
            raise ProviderResponseError(msg)
        return []

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, Mapping):
            return
        if "input_tokens" in usage:
            self.input_tokens = _usage_in(usage)
        if "output_tokens" in usage:
            self.output_tokens = _int(usage.get("output_tokens"))

    def end(self) -> StreamChunk:
        if not self.done:
            raise stream_ended_early("'message_stop'")
        return StreamChunk(finish_reason=self.finish, input_tokens=self.input_tokens,
                           output_tokens=self.output_tokens)


class AnthropicAdapter:
    """Sans-I/O adapter for the Anthropic Messages API."""

    name = "anthropic"

    def build_request(self, req: ChatRequest, *, model: str, base_url: str, api_key: str | None,
                      headers: Mapping[str, str], stream: bool, max_tokens: int | None) -> httpx.Request:
        system = [content_text(m.get("content")) for m in req.messages if m.get("role") in _SYSTEM_ROLES]
        if req.json_mode:
            system.append(_JSON_INSTRUCTION)
        messages = [
            {"role": "assistant" if m.get("role") == "assistant" else "user", "content": _content(m.get("content"))}
            for m in req.messages if m.get("role") not in _SYSTEM_ROLES
        ]
        if not messages:  # the API needs at least one turn: send the instructions as the user turn
            messages, system = [{"role": "user", "content": "\n\n".join(system)}], []
        body: dict[str, Any] = {"model": model, "messages": messages,
                                "max_tokens": max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS}
        if system:
            body["system"] = "\n\n".join(system)
        if req.temperature is not None:
            body["temperature"] = min(req.temperature, 1.0)
        if req.extra.get("top_p") is not None:
            body["top_p"] = req.extra["top_p"]
        stop = req.extra.get("stop")
        if stop is not None:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if stream:
            body["stream"] = True
        hdrs = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION,
                "accept": "text/event-stream" if stream else "application/json"}
        if api_key:
            hdrs["x-api-key"] = api_key
        hdrs.update(headers)
        root = base_url.rstrip("/")
        url = root + ("/messages" if root.endswith("/v1") else "/v1/messages")
        return httpx.Request("POST", endpoint_url(url), headers=hdrs, content=json.dumps(body).encode())

    def parse_response(self, resp: httpx.Response) -> ProviderReply:
        data = json_body(resp)
        content = data.get("content")
        if not isinstance(content, list):
            if "error" in data:
                raise response_error(f"error object in a {resp.status_code} response: "
                                     f"{error_message(resp.content)}", resp.status_code)
            raise response_error("response has no 'content' list", resp.status_code)
        text = "".join(str(b.get("text", "")) for b in content if isinstance(b, Mapping) and b.get("type") == "text")
        usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
        in_tok = _usage_in(usage)
        out_tok = _int(usage.get("output_tokens"))
        if in_tok is None:
            in_tok = estimate_tokens(_prompt_chars(request_json(resp)))
        if out_tok is None:
            out_tok = estimate_tokens(text)
        return ProviderReply(text=text, finish_reason=_finish(data.get("stop_reason")), input_tokens=in_tok,
                             output_tokens=out_tok, raw=data)

    def parse_stream(self, lines: Iterator[str]) -> Iterator[StreamChunk]:
        return parse_sse(self.stream_parser(), lines)

    def stream_parser(self) -> AnthropicStreamParser:
        return AnthropicStreamParser()

    def classify_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        return classify_http_error(status, body, headers)
