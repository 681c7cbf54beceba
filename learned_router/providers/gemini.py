"""Adapter for Google's Gemini API (``generateContent`` and ``streamGenerateContent?alt=sse``).

``base_url`` is the API host (``https://generativelanguage.googleapis.com``); ``/v1beta`` is added unless the
URL already names an API version. The key travels in the ``x-goog-api-key`` header, never in the URL, so it
cannot leak into logged URLs. Assistant turns become ``model`` turns; system and developer messages become
``systemInstruction``; usage comes from ``usageMetadata`` (thinking tokens count as output).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from learned_router.errors import ProviderError, RateLimited
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

__all__ = ["GeminiAdapter", "GeminiStreamParser"]

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
           "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter"}
_SYSTEM_ROLES = frozenset({"system", "developer"})
_VERSIONED = re.compile(r"/v1(alpha|beta)?$")
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _finish(reason: Any) -> str | None:
    if not isinstance(reason, str) or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    return _FINISH.get(reason, reason.lower())


def _parts(content: Any) -> list[dict[str, str]]:
    return [{"text": content_text(content)}]


def _usage(meta: Any) -> tuple[int | None, int | None]:
    if not isinstance(meta, Mapping):
        return None, None
    out = _int(meta.get("candidatesTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount")) or 0
    return _int(meta.get("promptTokenCount")), (out + thoughts if out is not None else None)


def _candidate_text(data: Mapping[str, Any]) -> tuple[str, str | None, bool]:
    """(text, finish reason, whether a candidate was present)."""
    cands = data.get("candidates")
    if not isinstance(cands, list) or not cands or not isinstance(cands[0], Mapping):
        return "", None, False
    content = cands[0].get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    text = "".join(str(p.get("text", "")) for p in parts or () if isinstance(p, Mapping) and not p.get("thought"))
    return text, _finish(cands[0].get("finishReason")), True


def _prompt_chars(body: Any) -> str:
    if not isinstance(body, Mapping):
        return ""
    texts: list[str] = []
    blocks = [body.get("systemInstruction"), *(body.get("contents") or ())]
    for block in blocks:
        if isinstance(block, Mapping):
            texts.extend(str(p.get("text", "")) for p in block.get("parts") or () if isinstance(p, Mapping))
    return "\n".join(texts)


class GeminiStreamParser:
    """Each event is a whole ``GenerateContentResponse``; there is no terminator event, so the stream is
    complete when it closes after a candidate with a ``finishReason``."""

    def __init__(self, adapter: GeminiAdapter) -> None:
        self.adapter = adapter
        self.done = False
        self.finish: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        obj = event.json()
        if "error" in obj:
            raise self.adapter.classify_error(500, event.data.encode(), {})
        text, reason, _ = _candidate_text(obj)
        self.finish = reason or self.finish
        got_in, got_out = _usage(obj.get("usageMetadata"))
        self.input_tokens = got_in if got_in is not None else self.input_tokens
        self.output_tokens = got_out if got_out is not None else self.output_tokens
        return [StreamChunk(text=text)] if text else []

    def end(self) -> StreamChunk:
        if self.finish is None:
            raise stream_ended_early("a finishReason")
        return StreamChunk(finish_reason=self.finish, input_tokens=self.input_tokens,
                           output_tokens=self.output_tokens)


class GeminiAdapter:
    """Sans-I/O adapter for the Gemini ``generateContent`` API."""

    name = "gemini"

    def build_request(self, req: ChatRequest, *, model: str, base_url: str, api_key: str | None,
                      headers: Mapping[str, str], stream: bool, max_tokens: int | None) -> httpx.Request:
        system = [content_text(m.get("content")) for m in req.messages if m.get("role") in _SYSTEM_ROLES]
        contents = [
            {"role": "model" if m.get("role") == "assistant" else "user", "parts": _parts(m.get("content"))}
            for m in req.messages if m.get("role") not in _SYSTEM_ROLES
        ]
        if not contents:
            contents, system = [{"role": "user", "parts": [{"text": "\n\n".join(system)}]}], []
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        gen: dict[str, Any] = {}
        if max_tokens is not None:
            gen["maxOutputTokens"] = max_tokens
        if req.temperature is not None:
            gen["temperature"] = req.temperature
        if req.extra.get("top_p") is not None:
            gen["topP"] = req.extra["top_p"]
        if req.extra.get("seed") is not None:
            gen["seed"] = req.extra["seed"]
        stop = req.extra.get("stop")
        if stop is not None:
            gen["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
        if req.json_mode:
            gen["responseMimeType"] = "application/json"
        if gen:
            body["generationConfig"] = gen
        hdrs = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
        if api_key:
            hdrs["x-goog-api-key"] = api_key
        hdrs.update(headers)
        root = base_url.rstrip("/")
        if not _VERSIONED.search(root):
            root += "/v1beta"
        name = model.removeprefix("models/")
        url = f"{root}/models/{name}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
        return httpx.Request("POST", endpoint_url(url), headers=hdrs, content=json.dumps(body).encode())

    def parse_response(self, resp: httpx.Response) -> ProviderReply:
        data = json_body(resp)
        text, finish, present = _candidate_text(data)
        if not present:
            feedback = data.get("promptFeedback")
            if isinstance(feedback, Mapping) and feedback.get("blockReason"):
                finish = "content_filter"
            elif "error" in data:
                raise response_error(f"error object in a {resp.status_code} response: "
                                     f"{error_message(resp.content)}", resp.status_code)
            else:
                raise response_error("response has no 'candidates'", resp.status_code)
        in_tok, out_tok = _usage(data.get("usageMetadata"))
        if in_tok is None:
            in_tok = estimate_tokens(_prompt_chars(request_json(resp)))
        if out_tok is None:
            out_tok = estimate_tokens(text)
        return ProviderReply(text=text, finish_reason=finish, input_tokens=in_tok, output_tokens=out_tok,
                             raw=data)

    def parse_stream(self, lines: Iterator[str]) -> Iterator[StreamChunk]:
        return parse_sse(self.stream_parser(), lines)

    def stream_parser(self) -> GeminiStreamParser:
        return GeminiStreamParser(self)

    def classify_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        err = classify_http_error(status, body, headers)
        if isinstance(err, RateLimited) and err.retry_after_s is None:
            err.retry_after_s = _retry_delay(body)
        return err


def _retry_delay(body: bytes) -> float | None:
    """Gemini puts the wait in ``error.details[].retryDelay`` (e.g. ``"31s"``) instead of ``Retry-After``."""
    try:
        data = json.loads(body)
        details = data["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return None
    for item in details if isinstance(details, list) else ():
        match = _DELAY.match(str(item.get("retryDelay", ""))) if isinstance(item, Mapping) else None
        if match:
            return float(match.group(1))
    return None
