"""Relaying a routed stream to the client as OpenAI server-sent events.

The contract a client can rely on:

* Failover happens only before the first byte. The gateway waits for the router's first chunk before it
  sends the status line, so a request whose every attempt fails before any text gets an ordinary JSON
  error answer (502, 503, ...) instead of a stream.
* Once streaming, each upstream text delta is sent as soon as it arrives, as one
  ``chat.completion.chunk`` event.
* A stream that ended cleanly closes with a chunk carrying ``finish_reason``, then a usage chunk
  (``choices: []``, ``usage``, and a ``learned_router`` object with the cost, provider and request id), then
  ``data: [DONE]``. Usage is always sent, whatever ``stream_options`` says.
* A stream that fails after the first byte ends with one event ``data: {"error": {...}}`` (type
  ``upstream_error``, code ``stream_interrupted``) and then the connection closes: no ``finish_reason``, no
  usage chunk and no ``[DONE]`` are sent, so a truncated answer never looks complete. The official
  ``openai`` client raises ``APIError`` on that event.
* If the client goes away, the upstream stream is closed and the request is logged as abandoned.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from learned_router.errors import ProviderError
from learned_router.gateway.errors import HttpError, Redactor, to_http_error
from learned_router.gateway.wire import ChunkWriter, sse_error
from learned_router.types import Completion, StreamChunk

__all__ = ["SSEResponse", "relay"]

log = logging.getLogger(__name__)


async def relay(first: StreamChunk, chunks: AsyncIterator[StreamChunk], writer: ChunkWriter, *,
                completion: Callable[[], Completion | None], redact: Redactor,
                on_done: Callable[[Completion], None], on_error: Callable[[HttpError, BaseException], None],
                ) -> AsyncIterator[bytes]:
    """The SSE bytes of one stream, starting from its already-received ``first`` chunk.

    Closes ``chunks`` when it ends for any reason (finished, failed, or the client went away)."""
    try:
        chunk: StreamChunk | None = first
        try:
            while chunk is not None:
                if chunk.text:
                    yield writer.delta(chunk.text)
                chunk = await anext(chunks, None)
        except Exception as exc:  # noqa: BLE001 - any failure mid-stream becomes an error event
            err = to_http_error(exc, redact)
            if isinstance(exc, ProviderError):
                err = HttpError(502, f"the provider stream failed after it started: {exc}", kind="upstream_error",
                                code="stream_interrupted")
            on_error(err, exc)
            yield sse_error(err.body(redact))
            return
        done = completion()
        if done is None:  # the router ended without a result: never claim completeness
            err = HttpError(502, "the stream ended without a result", kind="upstream_error",
                            code="stream_interrupted")
            on_error(err, RuntimeError("stream ended without a completion"))
            yield sse_error(err.body(redact))
            return
        yield writer.final(done)
        on_done(done)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


class SSEResponse(Response):
    """A ``text/event-stream`` response that stops relaying (and closes the upstream stream) as soon as the
    client disconnects, and always closes its event source, even if the response never started."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: dict[str, str], *,
                 source: AsyncIterator[Any] | None = None, on_close: Callable[[], None] | None = None) -> None:
        # Like StreamingResponse: no ``body`` attribute, so no Content-Length header.
        self.status_code = 200
        self.background = None
        self.init_headers({**headers, "cache-control": "no-cache"})
        self.events = events
        self.source = source
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stream(cancel: anyio.CancelScope) -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for data in self.events:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            cancel.cancel()

        async def watch(cancel: anyio.CancelScope) -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    log.info("client disconnected mid-stream")
                    cancel.cancel()
                    return

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, tg.cancel_scope)
                await stream(tg.cancel_scope)
        finally:
            try:
                # ``events`` may never have started (then its own cleanup never runs): close the source too.
                with anyio.CancelScope(shield=True):
                    for it in (self.events, self.source):
                        aclose: Any = getattr(it, "aclose", None)
                        if aclose is not None:
                            await aclose()
            finally:
                if self.on_close is not None:
                    self.on_close()
