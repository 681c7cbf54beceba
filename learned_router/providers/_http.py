"""Sending provider requests (sync and async) over injected httpx clients.

This module is the only place where httpx exceptions become ``ProviderError``s:

=====================================================  ==========================
httpx.TimeoutException (connect, read, write, pool)    ProviderTimeout
httpx.TransportError (refused, reset, peer closed...)   ProviderUnavailable
HTTP status >= 400                                     the adapter's classify_error
an unparseable or wrongly shaped body                  ProviderResponseError
=====================================================  ==========================

Every error carries ``provider``, ``model``, ``request_id`` (the router's id of the request),
``status_code`` (when there was one) and ``retryable``. An error in the middle of a stream, after chunks
were already yielded, is raised from the iterator the same way; the caller decides what to do with the
partial answer. The API key never appears in an error message, a repr or a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, NoReturn

import httpx

from learned_router.config import ProviderConfig
from learned_router.errors import (
    ProviderError,
    ProviderResponseError,
    ProviderTimeout,
    ProviderUnavailable,
)
from learned_router.providers.base import SSEDecoder, SSEEvent, estimate_tokens
from learned_router.types import ChatRequest, ProviderReply, StreamChunk

if TYPE_CHECKING:
    from learned_router.providers.base import ProviderAdapter

__all__ = ["ProviderClient"]

log = logging.getLogger(__name__)

_REDACTED = "[redacted]"
# What a buggy or hostile body can make an adapter raise; all mean "the body is not what the API promises".
_SHAPE_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError)
_PROVIDER_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-goog-request-id")


class ProviderClient:
    """One configured provider: its adapter, its resolved key and the HTTP clients that carry its calls.

    Args:
        config: the provider's configuration (name, model, base_url, prices, headers).
        adapter: the wire-format adapter for ``config.kind``.
        api_key: the resolved key (not the ``env:`` reference), or None.
        http: a shared ``httpx.Client``; created on first use (and then owned and closed here) when None.
        ahttp: a shared ``httpx.AsyncClient``; likewise.

    Injected clients belong to the caller: ``close``/``aclose`` close only the clients created here.
    """

    def __init__(self, config: ProviderConfig, adapter: ProviderAdapter, *, api_key: str | None = None,
                 http: httpx.Client | None = None, ahttp: httpx.AsyncClient | None = None) -> None:
        self._config = config
        self._adapter = adapter
        self._api_key = api_key
        self._http = http
        self._ahttp = ahttp
        self._owns_http = http is None
        self._owns_ahttp = ahttp is None

    # -- identity ---------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._config.name

    @property
    def model(self) -> str:
        return self._config.model

    @property
    def arm(self) -> str:
        """``"name::model"``."""
        return f"{self._config.name}::{self._config.model}"

    @property
    def config(self) -> ProviderConfig:
        return self._config

    @property
    def adapter(self) -> ProviderAdapter:
        return self._adapter

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"ProviderClient(arm={self.arm!r}, kind={self._config.kind!r}, api_key={key})"

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """Dollar cost of a call from the configured per-million-token prices."""
        return (input_tokens * self._config.price_in_per_mtok
                + output_tokens * self._config.price_out_per_mtok) / 1_000_000

    # -- sync -------------------------------------------------------------------------------------------
    def complete(self, req: ChatRequest, *, timeout_s: float) -> ProviderReply:
        """One non-streaming call. ``timeout_s`` bounds each phase (connect, each read, write, pool wait).

        Raises:
            ProviderError: a subclass per failure (see the module docstring).
        """
        request = self._request(req, stream=False, timeout_s=timeout_s)
        started = time.perf_counter()
        try:
            resp = self._client().send(request)
        except httpx.HTTPError as exc:
            self._raise_transport(exc, req, timeout_s)
        if resp.status_code >= 400:
            self._raise_status(resp.status_code, resp.content, resp.headers, req)
        reply = self._parse(resp, req)
        log.debug("%s answered in %.3f s (%d in, %d out tokens)", self.arm, time.perf_counter() - started,
                  reply.input_tokens, reply.output_tokens)
        return reply

    def stream(self, req: ChatRequest, *, timeout_s: float) -> Iterator[StreamChunk]:
        """Stream one call. A generator: nothing is sent until the first ``next``. The last chunk always
        carries ``finish_reason`` and integer usage (estimated as characters // 4 when the provider sent
        none). Errors before or after the first chunk raise ProviderError from the iterator.

        Raises:
            ProviderError: a subclass per failure (see the module docstring).
        """
        request = self._request(req, stream=True, timeout_s=timeout_s)
        try:
            resp = self._client().send(request, stream=True)
        except httpx.HTTPError as exc:
            self._raise_transport(exc, req, timeout_s)
        try:
            if resp.status_code >= 400:
                try:
                    body = resp.read()
                except httpx.HTTPError as exc:
                    self._raise_transport(exc, req, timeout_s)
                self._raise_status(resp.status_code, body, resp.headers, req)
            state = _StreamState(self, req, timeout_s, resp.headers)
            decoder = SSEDecoder()
            lines = resp.iter_lines()
            while not state.parser.done:
                try:
                    line = next(lines, None)
                except httpx.HTTPError as exc:
                    state.transport_error(exc)
                if line is None:
                    break
                event = decoder.feed(line)
                if event is not None:
                    yield from state.feed(event)
            yield from state.finish(decoder.flush())
        finally:
            resp.close()

    # -- async ------------------------------------------------------------------------------------------
    async def acomplete(self, req: ChatRequest, *, timeout_s: float) -> ProviderReply:
        """Async ``complete``."""
        request = self._request(req, stream=False, timeout_s=timeout_s)
        try:
            resp = await self._aclient().send(request)
        except httpx.HTTPError as exc:
            self._raise_transport(exc, req, timeout_s)
        if resp.status_code >= 400:
            self._raise_status(resp.status_code, resp.content, resp.headers, req)
        return self._parse(resp, req)

    async def astream(self, req: ChatRequest, *, timeout_s: float) -> AsyncIterator[StreamChunk]:
        """Async ``stream``: an async generator of StreamChunks, with the same guarantees."""
        request = self._request(req, stream=True, timeout_s=timeout_s)
        try:
            resp = await self._aclient().send(request, stream=True)
        except httpx.HTTPError as exc:
            self._raise_transport(exc, req, timeout_s)
        try:
            if resp.status_code >= 400:
                try:
                    body = await resp.aread()
                except httpx.HTTPError as exc:
                    self._raise_transport(exc, req, timeout_s)
                self._raise_status(resp.status_code, body, resp.headers, req)
            state = _StreamState(self, req, timeout_s, resp.headers)
            decoder = SSEDecoder()
            lines = resp.aiter_lines()
            while not state.parser.done:
                try:
                    line = await anext(lines, None)
                except httpx.HTTPError as exc:
                    state.transport_error(exc)
                if line is None:
                    break
                event = decoder.feed(line)
                if event is not None:
                    for chunk in state.feed(event):
                        yield chunk
            for chunk in state.finish(decoder.flush()):
                yield chunk
        finally:
            await resp.aclose()

    # -- lifecycle --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the sync client if this object created it."""
        if self._owns_http and self._http is not None:
            self._http.close()
            self._http = None

    async def aclose(self) -> None:
        """Close the async client (and the sync one) if this object created them."""
        if self._owns_ahttp and self._ahttp is not None:
            await self._ahttp.aclose()
            self._ahttp = None
        self.close()

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals --------------------------------------------------------------------------------------
    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
        return self._http

    def _aclient(self) -> httpx.AsyncClient:
        if self._ahttp is None:
            self._ahttp = httpx.AsyncClient(limits=httpx.Limits(max_connections=100,
                                                                max_keepalive_connections=20))
        return self._ahttp

    def _request(self, req: ChatRequest, *, stream: bool, timeout_s: float) -> httpx.Request:
        cfg = self._config
        max_tokens = req.max_tokens if req.max_tokens is not None else cfg.max_output_tokens
        request = self._adapter.build_request(req, model=cfg.model, base_url=cfg.base_url, api_key=self._api_key,
                                              headers=cfg.headers, stream=stream, max_tokens=max_tokens)
        request.extensions["timeout"] = {"connect": timeout_s, "read": timeout_s, "write": timeout_s,
                                         "pool": timeout_s}  # = httpx.Timeout(timeout_s).as_dict(), cheaper
        return request

    def _parse(self, resp: httpx.Response, req: ChatRequest) -> ProviderReply:
        try:
            return self._adapter.parse_response(resp)
        except ProviderError as err:
            raise self._contextualize(err, req, resp.headers) from None
        except _SHAPE_ERRORS as exc:
            err = ProviderResponseError(f"unexpected response shape ({type(exc).__name__})",
                                        status_code=resp.status_code)
            raise self._contextualize(err, req, resp.headers) from None

    def _raise_transport(self, exc: httpx.HTTPError, req: ChatRequest, timeout_s: float, *,
                         midstream: bool = False) -> NoReturn:
        where = " mid-stream" if midstream else ""
        err: ProviderError
        if isinstance(exc, httpx.TimeoutException):
            err = ProviderTimeout(f"no answer within {timeout_s:g} s{where} ({type(exc).__name__})")
        elif isinstance(exc, httpx.DecodingError | httpx.TooManyRedirects):
            err = ProviderResponseError(f"undecodable response{where} ({type(exc).__name__})")
        else:
            err = ProviderUnavailable(f"connection failed{where} ({type(exc).__name__}: {exc})")
        raise self._contextualize(err, req, None) from exc

    def _raise_status(self, status: int, body: bytes, headers: httpx.Headers, req: ChatRequest) -> NoReturn:
        err = self._adapter.classify_error(status, body, headers)
        err.status_code = status
        raise self._contextualize(err, req, headers)

    def _contextualize(self, err: ProviderError, req: ChatRequest,
                       headers: httpx.Headers | Mapping[str, str] | None) -> ProviderError:
        """A copy of ``err`` naming this provider, model and request, with the API key redacted."""
        message = err.message
        if self._api_key:
            message = message.replace(self._api_key, _REDACTED)
        extra = {k: v for k, v in vars(err).items()
                 if k not in {"provider", "model", "request_id", "status_code", "retryable", "message"}}
        if headers is not None:
            for name in _PROVIDER_REQUEST_ID_HEADERS:
                if name in headers:
                    extra["provider_request_id"] = headers[name]
                    break
        return type(err)(message, provider=self.name, model=self.model, request_id=req.request_id,
                         status_code=err.status_code, retryable=err.retryable, **extra)


class _StreamState:
    """One stream's parser plus what the final chunk needs: counted text for the usage estimate, and the
    mapping of parser and transport errors to contextualized ProviderErrors."""

    def __init__(self, client: ProviderClient, req: ChatRequest, timeout_s: float,
                 headers: httpx.Headers) -> None:
        self.client = client
        self.req = req
        self.timeout_s = timeout_s
        self.headers = headers
        self.parser = client.adapter.stream_parser()
        self.chars = 0
        self.chunks = 0

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        try:
            chunks = self.parser.feed(event)
        except ProviderError as err:
            raise self.client._contextualize(err, self.req, self.headers) from None
        except _SHAPE_ERRORS as exc:
            err = ProviderResponseError(f"unexpected stream event shape ({type(exc).__name__})")
            raise self.client._contextualize(err, self.req, self.headers) from None
        for chunk in chunks:
            self.chars += len(chunk.text)
            self.chunks += 1
        return chunks

    def transport_error(self, exc: httpx.HTTPError) -> NoReturn:
        self.client._raise_transport(exc, self.req, self.timeout_s, midstream=self.chunks > 0)

    def finish(self, pending: SSEEvent | None) -> list[StreamChunk]:
        """The chunks of an event left open at the end (no closing blank line), then the final chunk with
        usage filled in by estimates where the provider sent none."""
        out = self.feed(pending) if pending is not None and not self.parser.done else []
        try:
            last = self.parser.end()
        except ProviderError as err:
            raise self.client._contextualize(err, self.req, self.headers) from None
        in_tok = last.input_tokens if last.input_tokens is not None else estimate_tokens(self.req.prompt_text())
        out_tok = last.output_tokens
        if out_tok is None:
            out_tok = max(1, self.chars // 4) if self.chars else 0
        out.append(StreamChunk(text=last.text, finish_reason=last.finish_reason, input_tokens=in_tok,
                               output_tokens=out_tok))
        return out
