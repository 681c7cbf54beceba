"""The gateway's ASGI front: exact-path dispatch to a handful of handlers, request bodies read under a size
limit, answers written as the two ASGI messages they are, and the lifespan protocol for shutdown hooks.

Why not FastAPI's or Starlette's router: the gateway has five fixed routes and no use for dependency
injection, middleware or per-request ``Request``/``Response`` objects, and that stack cost about 0.1 ms of
CPU per proxied request (a sixth of the gateway's own CPU per request; see
``benchmarks/gateway_overhead.py``). Starlette ``Response`` objects (the SSE stream) are ASGI apps and can
still be returned by a handler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from learned_router.gateway.errors import HttpError

__all__ = ["GatewayApp", "Reply", "Request"]

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

JSON = b"application/json"


def _too_large(limit: int) -> HttpError:
    return HttpError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")


class Request:
    """What a handler needs of an HTTP request: its headers (a dict with lower-case names, built on first
    use; a repeated header keeps its first value) and its body."""

    __slots__ = ("scope", "receive", "_headers")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        headers = self._headers
        if headers is None:
            headers = {}
            for name, value in self.scope["headers"]:  # ASGI servers send lower-case names
                key = name.decode("latin-1")
                if key not in headers:
                    headers[key] = value.decode("latin-1")
            self._headers = headers
        return headers

    async def body(self, limit: int) -> bytes:
        """The whole body. Raises HttpError 413 above ``limit`` bytes (declared or received), 400 for a
        malformed Content-Length or when the client went away before sending all of it."""
        declared = self.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise HttpError(400, "invalid Content-Length header", code="invalid_request") from None
            if size > limit:
                raise HttpError(413, f"request body of {size} bytes exceeds the limit of {limit}",
                                code="request_too_large")
        message = await self.receive()
        parts: list[bytes] = []
        total = 0
        while True:
            if message["type"] != "http.request":
                raise HttpError(400, "the client disconnected before sending the whole body",
                                code="client_disconnected")
            part = message.get("body", b"")
            if not message.get("more_body", False) and not parts:
                if len(part) > limit:
                    raise _too_large(limit)
                return part  # the usual case: the whole body in one message
            total += len(part)
            if total > limit:
                raise _too_large(limit)
            parts.append(part)
            if not message.get("more_body", False):
                return b"".join(parts)
            message = await self.receive()


class Reply:
    """A complete answer: status, body and extra raw headers (``Content-Type`` and ``Content-Length`` are
    added)."""

    __slots__ = ("body", "status", "headers", "content_type")

    def __init__(self, body: bytes, status: int = 200, headers: RawHeaders | None = None,
                 content_type: bytes = JSON) -> None:
        self.body = body
        self.status = status
        self.headers = headers
        self.content_type = content_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = [(b"content-type", self.content_type), (b"content-length", b"%d" % len(self.body))]
        if self.headers:
            head += self.headers
        await send({"type": "http.response.start", "status": self.status, "headers": head})
        await send({"type": "http.response.body", "body": self.body})


Handler = Callable[[Request], Awaitable[Any]]  # returns a Reply or any ASGI app (e.g. a Starlette Response)


class GatewayApp:
    """An ASGI app over ``routes`` (path → {method: handler}).

    Args:
        routes: exact paths (a trailing slash is ignored) and the handler of each method; GET handlers also
            answer HEAD.
        not_found: builds the answer to an unknown path (404) or method (405): ``(status, request)`` → Reply.
        on_error: builds the answer to an exception a handler raised: ``(exc, path)`` → Reply.
        on_shutdown: coroutine functions awaited, in order, when the server shuts down (lifespan).
    """

    def __init__(self, routes: dict[str, dict[str, Handler]], *, not_found: Callable[[int, Request], Reply],
                 on_error: Callable[[BaseException, str], Reply],
                 on_shutdown: Sequence[Callable[[], Awaitable[Any]]] = ()) -> None:
        self.routes: dict[str, dict[str, Handler]] = {}
        for path, methods in routes.items():
            table = dict(methods)
            if "GET" in table and "HEAD" not in table:
                table["HEAD"] = table["GET"]
            self.routes[path] = table
        self._not_found = not_found
        self._on_error = on_error
        self._on_shutdown = list(on_shutdown)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):
            path = path[len(root):]
        request = Request(scope, receive)
        methods = self.routes.get(path)
        if methods is None and len(path) > 1 and path.endswith("/"):
            methods = self.routes.get(path.rstrip("/"))
        if methods is None:
            await self._not_found(404, request)(scope, receive, send)
            return
        handler = methods.get(scope["method"])
        if handler is None:
            reply = self._not_found(405, request)
            reply.headers = [*(reply.headers or ()), (b"allow", ", ".join(sorted(methods)).encode())]
            await reply(scope, receive, send)
            return
        try:
            answer = await handler(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error answer
            answer = self._on_error(exc, path)
        await answer(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    for hook in self._on_shutdown:
                        await hook()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which logs it
                    log.exception("shutting the gateway down failed")
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

