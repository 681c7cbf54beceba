"""The OpenAI-compatible HTTP gateway: ``create_app(router)`` returns an ASGI app, ``serve`` runs it under
uvicorn. See ``gateway.app`` for the endpoints, ``gateway.wire`` for the routing headers,
``gateway.auth`` for keys, ``gateway.errors`` for the error answers and ``gateway.sse`` for streaming."""

from __future__ import annotations

from learned_router.gateway.app import DEFAULT_MAX_BODY_BYTES, create_app

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]
