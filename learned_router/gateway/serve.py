"""``learned-router serve``: run the gateway under uvicorn.

uvicorn picks its fastest installed pieces by itself (``uvloop`` for the event loop and ``httptools`` for
HTTP parsing when they are installed, else asyncio and h11); access logging is off because the router
already logs one line per request. Provider calls go through one shared ``LeanAsyncClient`` over
``PooledHTTP11Transport``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["serve"]

log = logging.getLogger(__name__)


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
    from learned_router.router import AsyncRouter

    from learned_router.gateway.transport import LeanAsyncClient, PooledHTTP11Transport

    # One keep-alive pool for every provider, over the lean HTTP/1.1 transport (see gateway.transport).
    upstream = LeanAsyncClient(transport=PooledHTTP11Transport())
    router = AsyncRouter.from_config(Path(config_path), ahttp=upstream)
    app = create_app(router, max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES, close_router=True,
                     on_shutdown=[upstream.aclose])
    log.info("serving %d providers on http://%s:%d", len(router.config.providers), host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, loop="auto", http="auto")
