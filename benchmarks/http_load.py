"""A light HTTP/1.1 load generator: ``workers`` keep-alive connections, each sending the same prepared
request again and again, one at a time, until ``total`` requests have been answered.

Why hand-written: the point is to measure a server's capacity on a 2-core machine where the client shares
the cores. The usual Python clients (the ``openai`` SDK, httpx, aiohttp) spend 0.3-5 ms of CPU per request
themselves, so on shared cores they measure mostly the client; ``wrk``/``oha`` are not Python packages and
would be an extra install. This one does no per-request allocation beyond the response buffer: it writes
the prepared bytes and finds the end of each answer with ``Content-Length`` (about 20 µs of CPU per
request). It understands only what the benchmark's servers send: HTTP/1.1 answers with ``Content-Length``.

    result = asyncio.run(run_load("127.0.0.1", 8000, request_bytes, total=3000, workers=32))
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

__all__ = ["chat_request", "run_load"]


def chat_request(host: str, port: int, path: str, body: dict[str, Any], *, api_key: str = "unused") -> bytes:
    """The bytes of one keep-alive ``POST`` with a JSON body."""
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"accept: application/json\r\nauthorization: Bearer {api_key}\r\n"
            f"content-length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


class _Conn(asyncio.Protocol):
    """One keep-alive connection sending ``request`` whenever the previous answer is complete."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        if not self.load.take():
            assert self.transport is not None
            self.transport.close()
            return
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower() + b"\r\n"
            at = head.find(b"\r\ncontent-length:")
            if at < 0:  # not something this client understands: count it and stop this connection
                self.load.error("no content-length")
                self.buf.clear()
                assert self.transport is not None
                self.transport.close()
                return
            length = int(head[at + 17:head.find(b"\r\n", at + 2)])
            if len(self.buf) < end + 4 + length:
                return
            status = int(head[9:12])
            del self.buf[:end + 4 + length]
            self.load.done(status, time.perf_counter() - self.sent_at)
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.load.remaining > 0 or self.buf:
            self.load.error(type(exc).__name__ if exc else "connection closed")
        if not self.closed.done():
            self.closed.set_result(None)


class _Load:
    def __init__(self, request: bytes, total: int) -> None:
        self.request = request
        self.remaining = total
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def take(self) -> bool:
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    def done(self, status: int, latency_s: float) -> None:
        if status == 200:
            self.latencies.append(latency_s)
        else:
            self.error(f"HTTP {status}")

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _round(host: str, port: int, request: bytes, total: int, workers: int) -> tuple[_Load, float]:
    loop = asyncio.get_running_loop()
    load = _Load(request, total)
    started = time.perf_counter()
    conns = [(await loop.create_connection(lambda: _Conn(load), host, port))[1] for _ in range(workers)]
    await asyncio.gather(*(c.closed for c in conns))
    return load, time.perf_counter() - started


async def run_load(host: str, port: int, request: bytes, *, total: int, workers: int,
                   warmup: int | None = None) -> dict[str, Any]:
    """Send ``warmup`` (default: ``workers``) requests, then ``total`` timed ones over ``workers``
    connections. Returns requests/s, latencies (seconds, answered 200) and errors by kind."""
    await _round(host, port, request, warmup if warmup is not None else workers, workers)
    cpu = time.process_time()
    load, elapsed = await _round(host, port, request, total, workers)
    return {"requests": total, "rps": total / elapsed, "latencies": load.latencies, "errors": load.errors,
            "client_cpu_ms_per_request": 1000 * (time.process_time() - cpu) / total}
