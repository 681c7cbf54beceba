"""The OpenAI-compatible HTTP gateway: ``create_app(router)`` → an ASGI app. No global state: all of it lives
on the router and on the app.

Endpoints:

* ``POST /v1/chat/completions`` (plain and ``stream: true``): ``model`` is ``auto``, a preset from
  ``routing.presets``, a provider name, or an arm ``provider::model``. Routing hints come as extra body fields
  or headers (see ``gateway.wire``). Answers carry ``x-learned-router-request-id``, ``-provider``, ``-model``
  and (non-streaming) ``-cost-usd`` headers; a stream reports its cost in its final usage chunk.
* ``GET /v1/models``: the presets and arms a client may name.
* ``POST /v1/feedback``: ``{"request_id": ..., "quality": 0..1}`` credits a served request (404 when the id is
  unknown or belongs to another tenant).
* ``GET /metrics`` (Prometheus text) and ``GET /health`` (200 ready / 503 not ready); both need no key.

Authentication and the error answers are described in ``gateway.auth`` and ``gateway.errors``; streaming in
``gateway.sse``; the ASGI plumbing (dispatch, bodies, lifespan) in ``gateway.asgi``.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import anyio

from learned_router.config import resolve_secret
from learned_router.errors import AllAttemptsFailedError
from learned_router.gateway.asgi import GatewayApp, Reply, Request
from learned_router.gateway.auth import KeyRing
from learned_router.gateway.errors import HttpError, Redactor, error_body, to_http_error
from learned_router.gateway.health import health_report
from learned_router.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from learned_router.gateway.sse import SSEResponse, relay
from learned_router.gateway.wire import (
    HEADER_COST,
    HEADER_MODEL,
    HEADER_PROVIDER,
    HEADER_REQUEST_ID,
    ChunkWriter,
    completion_body,
    parse_chat_request,
    parse_feedback,
)
from learned_router.router import AsyncRouter, Router
from learned_router.types import ChatRequest, Completion, split_arm

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1 << 20
_CHAT = "/v1/chat/completions"
_REQUEST_ID = HEADER_REQUEST_ID.encode()
_PROVIDER = HEADER_PROVIDER.encode()
_MODEL = HEADER_MODEL.encode()
_COST = HEADER_COST.encode()


def _as_async(router: Any) -> Any:
    """An AsyncRouter sharing ``router``'s state (a sync Router is wrapped; an AsyncRouter is used as is)."""
    if isinstance(router, AsyncRouter):
        return router
    return AsyncRouter(router.config, clients=router.clients, planner=router.planner, clock=router.clock,
                       log=router.log)


def _secrets(router: Any) -> list[str]:
    """Every provider key the router could send, so that the redactor can scrub them."""
    found: list[str] = []
    for p in router.config.providers:
        value = resolve_secret(p.api_key)
        if value:
            found.append(value)
    for client in router.clients.values():
        for attr in ("api_key", "_api_key"):
            value = getattr(client, attr, None)
            if isinstance(value, str) and value:
                found.append(value)
    return found


class _Gateway:
    """The endpoint handlers of one app."""

    def __init__(self, router: Any, *, max_body_bytes: int, secrets: Iterable[str]) -> None:
        self.router = router
        self.max_body_bytes = max_body_bytes
        self.keys = KeyRing(router.config.tenants)
        self.metrics = GatewayMetrics(router)
        self.redact = Redactor([*_secrets(router), *secrets])
        self._models = json.dumps(self._model_list()).encode()

    # -- helpers ------------------------------------------------------------------------------------------
    def _error(self, exc: BaseException, route: str, request_id: str | None = None) -> Reply:
        err = to_http_error(exc, self.redact)
        if err.status >= 500:
            if err.code == "internal_error":
                log.error("request %s failed unexpectedly: %s", request_id,
                          self.redact("".join(traceback.format_exception(exc)).rstrip()))
            else:
                log.warning("request %s answered %d: %s", request_id, err.status, self.redact(err.message))
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
        if request_id is not None:
            headers.append((_REQUEST_ID, request_id.encode()))
        self.metrics.http(route, err.status)
        self.metrics.error(err.kind, err.code)
        return Reply(err.encode(self.redact), err.status, headers)

    def _model_list(self) -> dict[str, Any]:
        cfg = self.router.config
        data: list[dict[str, Any]] = [{"id": "auto", "object": "model", "created": 0, "owned_by": "learned-router",
                                       "kind": "preset", "strategy": cfg.routing.strategy}]
        for name, preset in cfg.routing.presets.items():
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "learned-router",
                         "kind": "preset", "strategy": preset.strategy or cfg.routing.strategy})
        for p in cfg.providers:
            data.append({"id": p.arm, "object": "model", "created": 0, "owned_by": p.name, "kind": "arm",
                         "provider": p.name, "model": p.model, "region": p.region,
                         "price_in_per_mtok": p.price_in_per_mtok, "price_out_per_mtok": p.price_out_per_mtok})
        return {"object": "list", "data": data}

    # -- endpoints ----------------------------------------------------------------------------------------
    async def chat(self, request: Request) -> Any:
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        self.metrics.in_flight.inc()
        handed_off = False  # a started stream decrements in_flight itself when it closes
        try:
            headers = request.headers
            tenant = self.keys.tenant_for(headers.get("authorization"))
            body = await request.body(self.max_body_bytes)
            req = parse_chat_request(body, headers, request_id=request_id, tenant=tenant)
            if req.stream:
                response = await self._stream(req, started)
                handed_off = True
                return response
            try:
                completion = await self.router.complete(req)
            except AllAttemptsFailedError as exc:
                self.metrics.failed(exc.attempts, total_s=time.perf_counter() - started, stream=False)
                raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI error answer
            return self._error(exc, _CHAT, request_id)
        finally:
            if not handed_off:
                self.metrics.in_flight.dec()
        self.metrics.served(completion, total_s=time.perf_counter() - started, stream=False)
        self.metrics.http(_CHAT, 200)
        return Reply(json.dumps(completion_body(completion)).encode(), 200, [
            (_REQUEST_ID, request_id.encode()), (_PROVIDER, completion.provider.encode()),
            (_MODEL, completion.model.encode()), (_COST, b"%.10f" % completion.cost_usd)])

    async def _stream(self, req: ChatRequest, started: float) -> Any:
        """Start a stream: wait for the first chunk (failover happens before it), then relay."""
        stream = await self.router.astream(req)
        chunks = stream.__aiter__()
        try:
            first = await anext(chunks)
        except BaseException as exc:
            attempts = exc.attempts if isinstance(exc, AllAttemptsFailedError) else stream.run.attempts
            self.metrics.failed(attempts, total_s=time.perf_counter() - started, stream=True)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            if isinstance(exc, StopAsyncIteration):
                raise HttpError(502, "the provider stream ended before it started", kind="upstream_error",
                                code="stream_interrupted") from None
            raise
        arm = stream.served_arm or stream.decision.arm
        provider, model = split_arm(arm)

        def on_done(c: Completion) -> None:
            self.metrics.served(c, total_s=time.perf_counter() - started, stream=True)
            self.metrics.http(_CHAT, 200)

        def on_error(err: HttpError, exc: BaseException) -> None:
            self.metrics.failed(stream.run.attempts, total_s=time.perf_counter() - started, stream=True)
            self.metrics.interruptions.labels(provider).inc()
            self.metrics.http(_CHAT, 200)
            self.metrics.error(err.kind, err.code)
            if err.code == "internal_error":
                log.error("stream %s failed unexpectedly: %s", req.request_id,
                          self.redact("".join(traceback.format_exception(exc)).rstrip()))
            else:
                log.warning("stream %s interrupted after the first byte: %s", req.request_id,
                            self.redact(err.message))

        events: AsyncIterator[bytes] = relay(first, chunks, ChunkWriter(req.request_id, arm),
                                             completion=lambda: stream.completion, redact=self.redact,
                                             on_done=on_done, on_error=on_error)
        headers = {HEADER_REQUEST_ID: req.request_id, HEADER_PROVIDER: provider, HEADER_MODEL: model}
        return SSEResponse(events, headers, source=chunks, on_close=self.metrics.in_flight.dec)

    async def models(self, request: Request) -> Reply:
        try:
            self.keys.tenant_for(request.headers.get("authorization"))
        except HttpError as exc:
            return self._error(exc, "/v1/models")
        self.metrics.http("/v1/models", 200)
        return Reply(self._models)

    async def feedback(self, request: Request) -> Reply:
        route = "/v1/feedback"
        try:
            tenant = self.keys.tenant_for(request.headers.get("authorization"))
            fb = parse_feedback(await request.body(self.max_body_bytes))
            # The decision log may wait for its writer and open SQLite: keep that off the event loop.
            ok = await anyio.to_thread.run_sync(functools.partial(
                Router.feedback, self.router, fb.request_id, fb.quality, source=fb.source, tenant=tenant))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI error answer
            return self._error(exc, route)
        self.metrics.feedback.labels("accepted" if ok else "not_found").inc()
        if not ok:
            return self._error(HttpError(404, f"no served request with id '{fb.request_id}' for this tenant",
                                         code="request_not_found", param="request_id"), route)
        self.metrics.http(route, 200)
        return Reply(json.dumps({"request_id": fb.request_id, "accepted": True}).encode())

    async def health(self, request: Request) -> Reply:
        ready, body = health_report(self.router)
        self.metrics.http("/health", 200 if ready else 503)
        return Reply(json.dumps(body).encode(), 200 if ready else 503)

    async def prometheus(self, request: Request) -> Reply:
        self.metrics.http("/metrics", 200)
        return Reply(self.metrics.render(), content_type=CONTENT_TYPE.encode())

    def not_found(self, status: int, request: Request) -> Reply:
        """The answer to an unknown path (404) or a method a path does not take (405)."""
        if status == 404:
            detail, code = "Not Found", "not_found"
        else:
            detail, code = "Method Not Allowed", "method_not_allowed"
        scope = request.scope
        body = error_body(f"{detail}: {scope['method']} {scope['path']}", "invalid_request_error", code)
        return Reply(json.dumps(body).encode(), status)


def create_app(router: Any, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, close_router: bool = False,
               redact: Iterable[str] = (), on_shutdown: Iterable[Callable[[], Awaitable[Any]]] = ()) -> GatewayApp:
    """The gateway app serving ``router``.

    Args:
        router: a Router or AsyncRouter (a sync Router is wrapped in an AsyncRouter sharing its state).
        max_body_bytes: request bodies above this many bytes are refused with 413 (default 1 MiB).
        close_router: close the router's provider clients and log when the app shuts down.
        redact: more secret strings to scrub from every answer and log line (provider keys are always
            scrubbed).
        on_shutdown: coroutine functions awaited when the app shuts down (after the router is closed).

    The app's ``gateway`` attribute holds the handlers (and their ``metrics``), ``router`` the AsyncRouter.
    """
    arouter = _as_async(router)
    gw = _Gateway(arouter, max_body_bytes=max_body_bytes, secrets=redact)
    hooks: list[Callable[[], Awaitable[Any]]] = [arouter.aclose] if close_router else []
    app = GatewayApp({
        _CHAT: {"POST": gw.chat},
        "/v1/models": {"GET": gw.models},
        "/v1/feedback": {"POST": gw.feedback},
        "/health": {"GET": gw.health},
        "/metrics": {"GET": gw.prometheus},
    }, not_found=gw.not_found, on_error=gw._error, on_shutdown=[*hooks, *on_shutdown])
    app.gateway = gw  # type: ignore[attr-defined]
    app.router = arouter  # type: ignore[attr-defined]
    return app
