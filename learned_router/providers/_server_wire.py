"""The server side of the OpenAI chat-completions, Anthropic Messages and Gemini generateContent wire
formats: parse a request body, write an answer (whole or as SSE events) and write errors in each API's own
shape. Used by ``learned_router.simulator``; the client side lives in the adapters beside this module.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learned_router.simulator import SimAnswer

__all__ = ["WIRES", "AnthropicWire", "GeminiWire", "OpenAIWire", "ParsedRequest", "Wire"]


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    model: str
    prompt: str
    last_user: str
    stream: bool
    max_tokens: int | None
    json_mode: bool
    include_usage: bool = True


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content or () if isinstance(p, Mapping))


def _sse(obj: Any, event: str | None = None) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj)
    return (f"event: {event}\n" if event else "").encode() + f"data: {data}\n\n".encode()


def _pieces(text: str, words_per_piece: int = 3) -> list[str]:
    words = re.findall(r"\S+\s*", text)
    return ["".join(words[i:i + words_per_piece]) for i in range(0, len(words), words_per_piece)] or [text]


class OpenAIWire:
    def parse(self, body: Any, path: Mapping[str, str]) -> ParsedRequest:
        msgs = body["messages"]
        users = [_text(m.get("content")) for m in msgs if m.get("role") == "user"]
        fmt = body.get("response_format") or {}
        return ParsedRequest(model=str(body.get("model", "")), prompt="\n".join(_text(m.get("content")) for m in msgs),
                       last_user=users[-1] if users else "", stream=bool(body.get("stream")),
                       max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"),
                       json_mode=fmt.get("type") == "json_object",
                       include_usage=bool((body.get("stream_options") or {}).get("include_usage")))

    def _usage(self, a: SimAnswer) -> dict[str, int]:
        return {"prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens,
                "total_tokens": a.input_tokens + a.output_tokens}

    def ok_body(self, p: ParsedRequest, a: SimAnswer) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": p.model, "choices": [{"index": 0, "message": {"role": "assistant", "content": a.text},
                                           "finish_reason": a.finish_reason}]}
        if a.usage:
            body["usage"] = self._usage(a)
        return body

    def stream_events(self, p: ParsedRequest, a: SimAnswer) -> tuple[list[bytes], list[bytes], list[bytes]]:
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": p.model}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        tail = [chunk({}, a.finish_reason)]
        if a.usage and p.include_usage:
            tail.append(_sse({**base, "choices": [], "usage": self._usage(a)}))
        tail.append(_sse("[DONE]"))
        return [chunk({"role": "assistant", "content": ""})], [chunk({"content": t}) for t in _pieces(a.text)], tail

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = {429: "rate_limit_exceeded", 500: "server_error", 504: "timeout"}.get(status, "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": kind}}

    def context_error(self, tokens: int, limit: int) -> dict[str, Any]:
        return {"error": {"message": f"This model's maximum context length is {limit} tokens. However, your "
                          f"messages resulted in {max(tokens, limit + 1)} tokens. Please reduce the length of "
                          "the messages.", "type": "invalid_request_error", "param": "messages",
                          "code": "context_length_exceeded"}}


class AnthropicWire:
    _STOP = {"stop": "end_turn", "length": "max_tokens"}

    def parse(self, body: Any, path: Mapping[str, str]) -> ParsedRequest:
        msgs = body["messages"]
        users = [_text(m.get("content")) for m in msgs if m.get("role") == "user"]
        texts = [_text(body.get("system"))] + [_text(m.get("content")) for m in msgs]
        return ParsedRequest(model=str(body.get("model", "")), prompt="\n".join(t for t in texts if t),
                       last_user=users[-1] if users else "", stream=bool(body.get("stream")),
                       max_tokens=int(body["max_tokens"]), json_mode=False)

    def ok_body(self, p: ParsedRequest, a: SimAnswer) -> dict[str, Any]:
        body: dict[str, Any] = {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
                                "model": p.model, "content": [{"type": "text", "text": a.text}],
                                "stop_reason": self._STOP[a.finish_reason], "stop_sequence": None}
        if a.usage:
            body["usage"] = {"input_tokens": a.input_tokens, "output_tokens": a.output_tokens}
        return body

    def stream_events(self, p: ParsedRequest, a: SimAnswer) -> tuple[list[bytes], list[bytes], list[bytes]]:
        usage = {"input_tokens": a.input_tokens, "output_tokens": 1} if a.usage else {}
        start = {"type": "message_start", "message": {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message",
                 "role": "assistant", "model": p.model, "content": [], "stop_reason": None, "usage": usage}}
        head = [_sse(start, "message_start"),
                _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                     "content_block_start"), _sse({"type": "ping"}, "ping")]
        body = [_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
                     "content_block_delta") for t in _pieces(a.text)]
        delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": self._STOP[a.finish_reason],
                                                                    "stop_sequence": None}}
        if a.usage:
            delta["usage"] = {"output_tokens": a.output_tokens}
        tail = [_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                _sse(delta, "message_delta"), _sse({"type": "message_stop"}, "message_stop")]
        return head, body, tail

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = {429: "rate_limit_error", 500: "api_error", 504: "timeout_error"}.get(status, "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def context_error(self, tokens: int, limit: int) -> dict[str, Any]:
        return self.error_body(400, f"prompt is too long: {max(tokens, limit + 1)} tokens > {limit} maximum")


class GeminiWire:
    _FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}
    _STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
               504: "DEADLINE_EXCEEDED"}

    def parse(self, body: Any, path: Mapping[str, str]) -> ParsedRequest:
        contents = body["contents"]
        texts = [_text(c.get("parts")) for c in contents]
        users = [_text(c.get("parts")) for c in contents if c.get("role", "user") == "user"]
        system = _text((body.get("systemInstruction") or {}).get("parts"))
        gen = body.get("generationConfig") or {}
        return ParsedRequest(model=path["target"].rpartition(":")[0], prompt="\n".join(t for t in [system, *texts] if t),
                       last_user=users[-1] if users else "", stream=False, max_tokens=gen.get("maxOutputTokens"),
                       json_mode=gen.get("responseMimeType") == "application/json")

    def _response(self, p: ParsedRequest, a: SimAnswer, text: str, finish: str | None, usage: bool) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        out: dict[str, Any] = {"candidates": [cand], "modelVersion": p.model}
        if usage and a.usage:
            out["usageMetadata"] = {"promptTokenCount": a.input_tokens, "candidatesTokenCount": a.output_tokens,
                                    "totalTokenCount": a.input_tokens + a.output_tokens}
        return out

    def ok_body(self, p: ParsedRequest, a: SimAnswer) -> dict[str, Any]:
        return self._response(p, a, a.text, self._FINISH[a.finish_reason], True)

    def stream_events(self, p: ParsedRequest, a: SimAnswer) -> tuple[list[bytes], list[bytes], list[bytes]]:
        pieces = _pieces(a.text)
        body = [_sse(self._response(p, a, t, None, False)) for t in pieces[:-1]]
        return [], body, [_sse(self._response(p, a, pieces[-1], self._FINISH[a.finish_reason], True))]

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "status": self._STATUS.get(status, "UNKNOWN")}}

    def context_error(self, tokens: int, limit: int) -> dict[str, Any]:
        return self.error_body(400, f"The input token count ({max(tokens, limit + 1)}) exceeds the maximum "
                                    f"number of tokens allowed ({limit}).")


Wire = OpenAIWire | AnthropicWire | GeminiWire

WIRES: Mapping[str, Wire] = {"openai": OpenAIWire(), "anthropic": AnthropicWire(), "gemini": GeminiWire()}
