"""A lean HTTP/1.1 transport for the gateway's calls to its providers (an ``httpx.AsyncBaseTransport``).

Why: on the gateway's hot path the provider call dominates the gateway's own cost. httpx's default
transport (httpcore over anyio) spends about 1 ms of CPU per request and writes the request head and body
in two socket writes, which costs an extra wake-up of the upstream server per request. This transport
writes each request in one ``write``, parses the response head with plain bytes operations, keeps
connections alive per origin, and streams bodies (``Content-Length``, chunked, or until close) so SSE works
unchanged. It raises the same httpx exceptions httpcore does, so the provider clients map failures to
``ProviderError``s exactly as before:

======================================  ==================================
connect fails / times out               httpx.ConnectError / ConnectTimeout
write fails / times out                 httpx.WriteError / WriteTimeout
read times out                          httpx.ReadTimeout
connection reset or closed mid-body     httpx.ReadError / RemoteProtocolError
unparseable status line or headers      httpx.RemoteProtocolError
======================================  ==================================

A reused keep-alive connection that fails before any byte of the response arrived (the server closed it
while idle) is retried once on a new connection. asyncio only.

``LeanAsyncClient`` goes one step further for clients that build complete requests themselves (as the
provider clients do): its ``send`` hands the request straight to the transport, skipping httpx's auth flow,
redirect handling and cookie jar (about a tenth of the gateway's CPU per request). For a non-streamed call
the transport reads a ``Content-Length`` body together with the head, under one read timeout, instead of
through httpx's chunk iterators.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

__all__ = ["LeanAsyncClient", "PooledHTTP11Transport"]

_MAX_HEAD_BYTES = 64 * 1024
_READ_SIZE = 64 * 1024
_DRAIN_S = 0.02  # how long closing an unfinished body may wait for its end
_DRAIN_BYTES = 64 * 1024
_EAGER_BODY_BYTES = 1 << 20  # a complete (non-streamed) answer up to this size is read in one go
_Key = tuple[str, str, int]


class _Connection:
    __slots__ = ("key", "reader", "writer", "reused")

    def __init__(self, key: _Key, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer
        self.reused = False

    def close(self) -> None:
        try:
            self.writer.close()
        except (OSError, RuntimeError):  # the loop may already be closed at shutdown
            pass


async def _timed(awaitable: Any, timeout_s: float | None, exc: type[httpx.TimeoutException],
                 what: str, request: httpx.Request) -> Any:
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        raise exc(f"{what} timed out", request=request) from None


class _Body(httpx.AsyncByteStream):
    """A response body read from the connection as the caller iterates; returns the connection to the pool
    when the body was read to its end and the connection may be kept."""

    def __init__(self, transport: PooledHTTP11Transport, conn: _Connection, request: httpx.Request, *,
                 length: int | None, chunked: bool, keep: bool, read_timeout: float | None) -> None:
        self._transport = transport
        self._conn: _Connection | None = conn
        self._request = request
        self._length = length
        self._chunked = chunked
        self._keep = keep
        self._timeout = read_timeout
        self._gen: AsyncIterator[bytes] | None = None

    async def _read(self, op: Any) -> bytes:
        try:
            data: bytes = await _timed(op, self._timeout, httpx.ReadTimeout, "reading the response", self._request)
            return data
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body",
                                            request=self._request) from None
        except (asyncio.LimitOverrunError, ValueError) as exc:
            raise httpx.RemoteProtocolError(f"malformed response body ({exc})", request=self._request) from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=self._request) from None

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._gen is None:
            self._gen = self._chunks()
        return self._gen

    async def _chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        reader = conn.reader
        if self._chunked:
            while True:
                line = await self._read(reader.readuntil(b"\r\n"))
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise httpx.RemoteProtocolError("malformed chunk size", request=self._request) from None
                if size == 0:
                    while (await self._read(reader.readuntil(b"\r\n"))) != b"\r\n":
                        pass  # trailers
                    break
                data = await self._read(reader.readexactly(size + 2))
                yield data[:-2]
        elif self._length is not None:
            remaining = self._length
            while remaining > 0:
                data = await self._read(reader.readexactly(min(remaining, _READ_SIZE)))
                remaining -= len(data)
                yield data
        else:  # until the server closes the connection
            self._keep = False
            while True:
                data = await self._read(reader.read(_READ_SIZE))
                if not data:
                    break
                yield data
        self._conn = None
        if self._keep:
            self._transport._release(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        """Release the connection. A body left unread only by its last few bytes (typically the end of a
        chunked SSE stream after ``data: [DONE]``) is drained briefly so the connection can be reused;
        otherwise the connection is closed."""
        if self._conn is None:
            return
        if self._keep and (self._chunked or self._length is not None):
            gen = self.__aiter__()
            drained = 0
            try:
                async with asyncio.timeout(_DRAIN_S):
                    async for data in gen:
                        drained += len(data)
                        if drained > _DRAIN_BYTES:
                            break
            except (TimeoutError, httpx.TransportError):
                pass
        if self._conn is not None:  # still not read to its end: the connection is in an unknown state
            self._conn.close()
            self._conn = None
        if self._gen is not None:
            await self._gen.aclose()  # type: ignore[attr-defined]


class PooledHTTP11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive connection reuse per origin (``http`` and ``https``).

    Args:
        max_idle_per_origin: idle connections kept per origin; more are closed when released.
        ssl_context: used for ``https`` (default: ``ssl.create_default_context()``, made on first use).
    """

    def __init__(self, *, max_idle_per_origin: int = 256, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_idle_per_origin = max_idle_per_origin
        self._ssl = ssl_context
        self._idle: dict[_Key, list[_Connection]] = {}

    def _release(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < self.max_idle_per_origin and not conn.reader.at_eof():
            conn.reused = True
            idle.append(conn)
        else:
            conn.close()

    def _take(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        return None

    async def _connect(self, key: _Key, request: httpx.Request, timeout_s: float | None) -> _Connection:
        scheme, host, port = key
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            reader, writer = await _timed(
                asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None,
                                        limit=_MAX_HEAD_BYTES),
                timeout_s, httpx.ConnectTimeout, "connecting", request)
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return _Connection(key, reader, writer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.exchange(request, read_body=False)

    async def exchange(self, request: httpx.Request, *, read_body: bool) -> httpx.Response:
        """``handle_async_request``; with ``read_body``, a body with a ``Content-Length`` of at most 1 MiB is
        read before returning (under the read timeout), so the answer comes back complete and its connection
        is back in the pool."""
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}", request=request)
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        head = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            head += [name, b": ", value, b"\r\n"]
        head += [b"\r\n", body]
        payload = b"".join(head)
        conn = self._take(key)
        if conn is not None:
            try:
                return await self._exchange(conn, request, payload, timeouts, read_body)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                if not getattr(exc, "_before_response", False):
                    raise
        conn = await self._connect(key, request, timeouts.get("connect"))
        return await self._exchange(conn, request, payload, timeouts, read_body)

    async def _exchange(self, conn: _Connection, request: httpx.Request, payload: bytes,
                        timeouts: dict[str, float | None], read_body: bool) -> httpx.Response:
        writer = conn.writer
        try:
            writer.write(payload)
            if writer.transport.get_write_buffer_size():  # not all sent at once: wait until it is
                await _timed(writer.drain(), timeouts.get("write"), httpx.WriteTimeout, "writing the request",
                             request)
        except OSError as exc:
            conn.close()
            err = httpx.WriteError(str(exc) or type(exc).__name__, request=request)
            err._before_response = conn.reused  # type: ignore[attr-defined]
            raise err from None
        except BaseException:
            conn.close()
            raise
        read_timeout = timeouts.get("read")
        content: bytes | None = None
        phase = "waiting for the response"
        try:
            async with asyncio.timeout(read_timeout):
                status, reason, headers, version = await self._read_head(conn, request)
                lower = {k.lower(): v for k, v in headers}
                chunked = b"chunked" in lower.get(b"transfer-encoding", b"").lower()
                length: int | None = None
                if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                    length = 0
                elif not chunked and b"content-length" in lower:
                    try:
                        length = int(lower[b"content-length"])
                    except ValueError:
                        raise httpx.RemoteProtocolError("malformed Content-Length", request=request) from None
                keep = version == b"HTTP/1.1" and lower.get(b"connection", b"").lower() != b"close"
                if read_body and length is not None and length <= _EAGER_BODY_BYTES:
                    phase = "reading the response"
                    content = await self._read_body(conn, request, length) if length else b""
        except TimeoutError:
            conn.close()
            raise httpx.ReadTimeout(f"{phase} timed out", request=request) from None
        except BaseException:
            conn.close()
            raise
        extensions = {"http_version": version, "reason_phrase": reason}
        if content is not None:
            if keep:
                self._release(conn)
            else:
                conn.close()
            response = httpx.Response(status, headers=headers, stream=httpx.ByteStream(content),
                                      request=request, extensions=extensions)
            if b"content-encoding" in lower:
                response.read()  # decoded by httpx
            else:  # what read() would store, without setting up a decoder and a chunker (2/3 of the cost)
                response._content = content
                response.is_stream_consumed = response.is_closed = True
            return response
        stream = _Body(self, conn, request, length=length, chunked=chunked, keep=keep,
                       read_timeout=read_timeout)
        return httpx.Response(status, headers=headers, stream=stream, request=request, extensions=extensions)

    @staticmethod
    async def _read_body(conn: _Connection, request: httpx.Request, length: int) -> bytes:
        try:
            data: bytes = await conn.reader.readexactly(length)
            return data
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body",
                                            request=request) from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None

    async def _read_head(self, conn: _Connection, request: httpx.Request,
                         ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
        try:
            raw = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            err: httpx.TransportError = httpx.RemoteProtocolError(
                "server disconnected without sending a response", request=request)
            err._before_response = conn.reused and not exc.partial  # type: ignore[attr-defined]
            raise err from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError("response head too large", request=request) from None
        except OSError as exc:
            err = httpx.ReadError(str(exc) or type(exc).__name__, request=request)
            err._before_response = conn.reused  # type: ignore[attr-defined]
            raise err from None
        lines = raw[:-4].split(b"\r\n")
        try:
            version, code, *rest = lines[0].split(b" ", 2)
            status = int(code)
        except ValueError:
            raise httpx.RemoteProtocolError("malformed status line", request=request) from None
        if not version.startswith(b"HTTP/1."):
            raise httpx.RemoteProtocolError("not an HTTP/1.x response", request=request)
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise httpx.RemoteProtocolError("malformed header line", request=request)
            headers.append((name, value.strip()))
        if 100 <= status < 200 and status != 101:  # an interim answer: the real one follows
            return await self._read_head(conn, request)
        return status, rest[0] if rest else b"", headers, version

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class LeanAsyncClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose ``send`` passes the request, as built, straight to its transport.

    No auth flow, no redirects (a 3xx is returned as is, as with ``follow_redirects=False``), no cookie jar,
    no per-request log line. Requests built with ``build_request`` or by hand work unchanged; the client's
    default timeout applies when the request has none. Use it only where requests carry their own
    credentials and never need redirects or cookies, like provider API calls.
    """

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._direct = transport

    async def send(self, request: httpx.Request, *, stream: bool = False, auth: Any = None,
                   follow_redirects: Any = None) -> httpx.Response:
        if "timeout" not in request.extensions:
            request.extensions["timeout"] = self.timeout.as_dict()
        if isinstance(self._direct, PooledHTTP11Transport):
            response = await self._direct.exchange(request, read_body=not stream)
        else:
            response = await self._direct.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response
