"""The sans-I/O provider adapter protocol and the pieces every adapter shares.

An adapter only translates: a ``ChatRequest`` into an ``httpx.Request``, a response body into a
``ProviderReply``, server-sent-event lines into ``StreamChunk``s, and an HTTP error status into a
``ProviderError``. It never sends anything; ``providers/_http.py`` does, and is the only place where httpx
exceptions become ``ProviderError``s.

Token counts: when a provider omits usage, adapters estimate tokens as ``max(1, characters // 4)`` of the
text concerned (the prompt for input tokens, the answer for output tokens), the same rule the router and the
benchmark datasets use. An estimate is never zero for non-empty text, so cost is never silently zero.

Finish reasons are normalised to OpenAI's vocabulary (``stop``, ``length``, ``content_filter``,
``tool_calls``) whatever the provider called them.
"""

from __future__ import annotations

import email.utils
import functools
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import httpx

from learned_router.errors import (
    ContextLengthExceeded,
    ProviderError,
    ProviderRejected,
    ProviderResponseError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from learned_router.types import ChatRequest, ProviderReply, StreamChunk

__all__ = [
    "CONTEXT_LENGTH_MARKERS",
    "ProviderAdapter",
    "SSEDecoder",
    "SSEEvent",
    "StreamParser",
    "classify_http_error",
    "content_text",
    "estimate_tokens",
    "error_message",
    "iter_sse",
    "json_body",
    "parse_retry_after",
    "parse_sse",
    "request_json",
    "response_error",
    "stream_ended_early",
]

_MAX_MESSAGE_CHARS = 300

# Substrings (lower-cased) by which OpenAI, vLLM, Ollama, Groq, Anthropic and Gemini say that a prompt does
# not fit the model's context window.
CONTEXT_LENGTH_MARKERS: tuple[str, ...] = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "prompt is too long",
    "input is too long",
    "too many tokens",
    "exceeds the maximum number of tokens",
    "input token count",
    "reduce the length of the messages",
)


class ProviderAdapter(Protocol):
    """Translate between learned-router's types and one provider API's wire format (no I/O)."""

    name: str

    def build_request(self, req: ChatRequest, *, model: str, base_url: str, api_key: str | None,
                      headers: Mapping[str, str], stream: bool, max_tokens: int | None) -> httpx.Request:
        """The HTTP request for ``req`` sent to ``model`` at ``base_url``."""
        ...

    def parse_response(self, resp: httpx.Response) -> ProviderReply:
        """Parse a successful (2xx) non-streaming response. Raises ProviderResponseError on a bad body."""
        ...

    def parse_stream(self, lines: Iterator[str]) -> Iterator[StreamChunk]:
        """Turn SSE lines into chunks. The last chunk carries ``finish_reason`` and, when the provider sent
        it, usage. Raises ProviderUnavailable when the stream ends before its terminator and
        ProviderResponseError on an unparseable event. (``parse_sse(self.stream_parser(), lines)``.)"""
        ...

    def stream_parser(self) -> StreamParser:
        """Fresh per-stream parser state; what ``parse_stream`` drives, and what async callers feed."""
        ...

    def classify_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        """The ProviderError for an HTTP error status (the caller adds provider, model and request id)."""
        ...


# -- tokens and text --------------------------------------------------------------------------------------
def estimate_tokens(text: str) -> int:
    """Estimated tokens of ``text``: ``max(1, len(text) // 4)``, and 0 for empty text."""
    return max(1, len(text) // 4) if text else 0


def content_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string, or a list of parts whose ``text`` is joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def request_json(resp: httpx.Response) -> Any:
    """The JSON body of the request that produced ``resp``, or None when it is unknown."""
    try:
        return json.loads(resp.request.content or b"null")
    except (RuntimeError, ValueError):
        return None


def json_body(resp: httpx.Response) -> Mapping[str, Any]:
    """The response body as a JSON object. Raises ProviderResponseError when it is not one."""
    try:
        data = json.loads(resp.content)
    except ValueError as exc:
        raise ProviderResponseError(f"response body is not valid JSON ({exc.msg} at char {exc.pos})",
                                    status_code=resp.status_code) from None
    if not isinstance(data, Mapping):
        raise ProviderResponseError(f"expected a JSON object, got {type(data).__name__}",
                                    status_code=resp.status_code)
    return data


# -- server-sent events -----------------------------------------------------------------------------------
class SSEEvent:
    """One server-sent event: its ``event`` name (or "") and its ``data`` (data lines joined by newlines)."""

    __slots__ = ("data", "event")

    def __init__(self, event: str, data: str) -> None:
        self.event = event
        self.data = data

    def json(self) -> Mapping[str, Any]:
        """The data as a JSON object. Raises ProviderResponseError otherwise."""
        try:
            obj = json.loads(self.data)
        except ValueError as exc:
            raise ProviderResponseError(f"stream event is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, Mapping):
            raise ProviderResponseError(f"stream event is a JSON {type(obj).__name__}, expected an object")
        return obj


class SSEDecoder:
    """Incremental SSE decoder (WHATWG rules: ``field: value`` lines; a blank line ends an event; lines
    starting with ``:`` are comments). Feed it one line at a time, sync or async alike."""

    __slots__ = ("_data", "_event")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, raw: str) -> SSEEvent | None:
        """Take one line; return the event it completes, if any."""
        line = raw.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def flush(self) -> SSEEvent | None:
        """The event still open (at a blank line or at the end of the stream), if it has data."""
        event = SSEEvent(self._event, "\n".join(self._data)) if self._data else None
        self._event, self._data = "", []
        return event


def iter_sse(lines: Iterable[str]) -> Iterator[SSEEvent]:
    """Group SSE lines into events; an event still open when the lines end is emitted too."""
    decoder = SSEDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
    event = decoder.flush()
    if event is not None:
        yield event


class StreamParser(Protocol):
    """Per-stream state of an adapter: events in, chunks out (no I/O, so sync and async share it)."""

    done: bool
    """True once the provider's terminator was seen; the caller stops reading."""

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        """Chunks carried by one event (text only; usage and finish reason are kept for ``end``)."""
        ...

    def end(self) -> StreamChunk:
        """The final chunk with ``finish_reason`` and usage (None where the provider sent none).
        Raises ProviderUnavailable when the stream stopped before the provider's terminator."""
        ...


def parse_sse(parser: StreamParser, lines: Iterable[str]) -> Iterator[StreamChunk]:
    """Drive ``parser`` over SSE ``lines``: every text chunk, then the final chunk."""
    for event in iter_sse(lines):
        yield from parser.feed(event)
        if parser.done:
            break
    yield parser.end()


# -- errors -----------------------------------------------------------------------------------------------
def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), else None."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_message(body: bytes) -> str:
    """A short, printable message from an error body: ``error.message`` (OpenAI, Anthropic, Gemini shapes),
    else the start of the body."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    msg = ""
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, Mapping):
            msg = str(err.get("message") or err.get("code") or err.get("type") or "")
        elif isinstance(err, str):
            msg = err
    if not msg:
        msg = body[: _MAX_MESSAGE_CHARS + 1].decode("utf-8", "replace").strip()
    msg = " ".join(msg.split())
    return msg[:_MAX_MESSAGE_CHARS] + ("..." if len(msg) > _MAX_MESSAGE_CHARS else "")


def _is_context_length(body: bytes) -> bool:
    text = body[:4000].decode("utf-8", "replace").lower()
    return any(marker in text for marker in CONTEXT_LENGTH_MARKERS)


def classify_http_error(status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
    """Map an HTTP error status and body to a ProviderError.

    A 4xx whose body says the prompt is too long → ContextLengthExceeded (retryable: a model with a larger
    window may serve); 408 → ProviderTimeout; 429 → RateLimited (``retry_after_s`` from ``Retry-After``);
    5xx (including Anthropic's 529) → ProviderUnavailable; other 4xx → ProviderRejected (not retryable);
    anything else (e.g. an unexpected 3xx) → ProviderResponseError.
    """
    detail = error_message(body)
    suffix = f": {detail}" if detail else ""
    if 400 <= status < 500 and status not in (408, 429) and _is_context_length(body):
        return ContextLengthExceeded(f"HTTP {status}, prompt exceeds the context window{suffix}",
                                     status_code=status)
    if status == 408:
        return ProviderTimeout(f"HTTP 408 request timeout{suffix}", status_code=status)
    if status == 429:
        retry_after = parse_retry_after(headers)
        return RateLimited(f"HTTP 429 rate limited{suffix}", status_code=status, retry_after_s=retry_after)
    if status >= 500:
        return ProviderUnavailable(f"HTTP {status}{suffix}", status_code=status)
    if 400 <= status < 500:
        return ProviderRejected(f"HTTP {status}{suffix}", status_code=status, retryable=False)
    return ProviderResponseError(f"unexpected HTTP status {status}{suffix}", status_code=status)


def stream_ended_early(what: str) -> ProviderUnavailable:
    """The error for a stream whose connection closed cleanly before the provider's terminator."""
    return ProviderUnavailable(f"stream ended before {what}")


def response_error(message: str, status: int | None = None) -> ProviderResponseError:
    """The error for a 2xx body that does not have the shape the API promises."""
    return ProviderResponseError(message, status_code=status)


@functools.lru_cache(maxsize=512)
def endpoint_url(url: str) -> httpx.URL:
    """A parsed URL, cached: parsing the same few provider URLs on every request costs ~0.1 ms each time."""
    return httpx.URL(url)
