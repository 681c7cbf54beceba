"""``learned-router serve``: run the gateway under uvicorn.

uvicorn picks its fastest installed pieces by itself (``uvloop`` for the event loop; HTTP parsing is
``httptools``, see below); access logging is off because the router already logs one line per request.
Provider calls go through one shared ``LeanAsyncClient`` over ``PooledHTTP11Transport``.

uvicorn's httptools protocol writes the head and the body of every answer in two socket writes: two
syscalls for the gateway and, since Nagle's algorithm is off, two packets that can wake the client twice.
No server option changes that, so ``serve`` runs uvicorn with a subclass of that protocol whose transport
joins the writes made in one step of the event loop into one (``_JoinedWrites``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["serve"]

log = logging.getLogger(__name__)


class _JoinedWrites:
    """A transport wrapper: writes made in one step of the event loop go out as one ``write`` at the end of
    that step (``call_soon``); ``close`` sends what is pending first. Everything else is the transport's."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _protocol_class() -> Any:
    """uvicorn's httptools protocol over ``_JoinedWrites``, or "auto" when httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"

    class JoinedWritesProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_JoinedWrites(transport, self.loop))  # type: ignore[arg-type]

    return JoinedWritesProtocol


def serve(config_path: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8000,
          max_body_bytes: int | None = None, log_level: str = "info") -> None:
    """Load the config, build an AsyncRouter and serve it until interrupted.

    Args:
        config_path: the router's YAML config.
        host, port: where to listen.
        max_body_bytes: request body limit (default 1 MiB).
        log_level: uvicorn's log level.

    Raises:
        ConfigError: the config is invalid (raised before anything listens).
    """
    import uvicorn

    from learned_router.gateway.app import DEFAULT_MAX_BODY_BYTES, create_app
    from learned_router.gateway.transport import LeanAsyncClient, PooledHTTP11Transport
    from learned_router.router import AsyncRouter

    # One keep-alive pool for every provider, over the lean HTTP/1.1 transport (see gateway.transport).
    upstream = LeanAsyncClient(transport=PooledHTTP11Transport())
    router = AsyncRouter.from_config(Path(config_path), ahttp=upstream)
    app = create_app(router, max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES, close_router=True,
                     on_shutdown=[upstream.aclose])
    log.info("serving %d providers on http://%s:%d", len(router.config.providers), host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, loop="auto",
                http=_protocol_class())
