"""Adapter for OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, Groq, Together, LM Studio, ...).

``base_url`` is the API root that ends before ``/chat/completions`` (``https://api.openai.com/v1``,
``http://localhost:11434/v1``). Streaming asks for ``stream_options: {include_usage: true}`` so that the last
event carries usage; servers that ignore it get the ``characters // 4`` estimate (see ``providers.base``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from learned_router.errors import ProviderError, ProviderUnavailable
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

__all__ = ["OpenAIAdapter", "OpenAIStreamParser"]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _prompt_chars(body: Any) -> str:
    if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
        return ""
    return "\n".join(content_text(m.get("content")) for m in body["messages"] if isinstance(m, Mapping))


class OpenAIStreamParser:
    """Chat-completion chunks; ``data: [DONE]`` ends the stream (a finish reason alone is accepted too, for
    servers that omit ``[DONE]``)."""

    def __init__(self) -> None:
        self.done = False
        self.finish: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        if event.data.strip() == "[DONE]":
            self.done = True
            return []
        obj = event.json()
        if "error" in obj:
            raise ProviderUnavailable(f"error event in stream: {error_message(event.data.encode())}")
        out: list[StreamChunk] = []
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            delta = choices[0].get("delta")
            text = content_text(delta.get("content")) if isinstance(delta, Mapping) else ""
            if text:
                out.append(StreamChunk(text=text))
            if isinstance(choices[0].get("finish_reason"), str):
                self.finish = choices[0]["finish_reason"]
        usage = obj.get("usage")
        if isinstance(usage, Mapping):
            self.input_tokens = _int(usage.get("prompt_tokens"))
            self.output_tokens = _int(usage.get("completion_tokens"))
        return out

    def end(self) -> StreamChunk:
        if not self.done and self.finish is None:
            raise stream_ended_early("'data: [DONE]'")
        return StreamChunk(finish_reason=self.finish, input_tokens=self.input_tokens,
                           output_tokens=self.output_tokens)


@functools.lru_cache(maxsize=256)
def _chat_url(base_url: str) -> httpx.URL:
    """``{base_url}/chat/completions``, parsed once per base URL (parsing costs ~10 µs per request)."""
    return endpoint_url(base_url.rstrip("/") + "/chat/completions")


SAMPLING_PARAMS = ("top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "user", "logit_bias",
                   "response_format")
"""Keys of ``ChatRequest.extra`` sent to OpenAI-compatible providers as they are."""


class OpenAIAdapter:
    """Sans-I/O adapter for ``POST {base_url}/chat/completions``."""

    name = "openai"

    def build_request(self, req: ChatRequest, *, model: str, base_url: str, api_key: str | None,
                      headers: Mapping[str, str], stream: bool, max_tokens: int | None) -> httpx.Request:
        body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in req.messages], "stream": stream}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.json_mode:
            body["response_format"] = {"type": "json_object"}
        for key in SAMPLING_PARAMS:  # OpenAI sampling parameters pass through unchanged
            if req.extra.get(key) is not None:
                body[key] = req.extra[key]
        if stream:
            body["stream_options"] = {"include_usage": True}
        url = _chat_url(base_url)
        payload = json.dumps(body).encode()
        # Host and Content-Length set here and the body given as a ready stream: httpx then skips its
        # request encoding step (a third of the cost of building the request).
        hdrs = {"host": url.netloc.decode("ascii"), "content-length": str(len(payload)),
                "content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
        if api_key:
            hdrs["authorization"] = f"Bearer {api_key}"
        for name, value in headers.items():  # configured headers replace ours, whatever their case
            if name.lower() != "content-length":
                hdrs[name.lower()] = value
        request = httpx.Request("POST", url, headers=hdrs, stream=httpx.ByteStream(payload))
        request.read()
        return request

    def parse_response(self, resp: httpx.Response) -> ProviderReply:
        data = json_body(resp)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            if "error" in data:
                raise response_error(f"error object in a {resp.status_code} response: "
                                     f"{error_message(resp.content)}", resp.status_code)
            raise response_error("response has no 'choices'", resp.status_code)
        message = choices[0].get("message")
        if not isinstance(message, Mapping):
            raise response_error("choices[0] has no 'message'", resp.status_code)
        text = content_text(message.get("content"))
        usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
        in_tok = _int(usage.get("prompt_tokens"))
        out_tok = _int(usage.get("completion_tokens"))
        if in_tok is None:
            in_tok = estimate_tokens(_prompt_chars(request_json(resp)))
        if out_tok is None:
            out_tok = estimate_tokens(text)
        finish = choices[0].get("finish_reason")
        return ProviderReply(text=text, finish_reason=finish if isinstance(finish, str) else None,
                             input_tokens=in_tok, output_tokens=out_tok, raw=data)

    def parse_stream(self, lines: Iterator[str]) -> Iterator[StreamChunk]:
        return parse_sse(self.stream_parser(), lines)

    def stream_parser(self) -> OpenAIStreamParser:
        return OpenAIStreamParser()

    def classify_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        return classify_http_error(status, body, headers)
