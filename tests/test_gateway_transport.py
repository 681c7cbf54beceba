"""``PooledHTTP11Transport`` (through ``LeanAsyncClient``) under the provider client, against real loopback servers: every simulated
failure must surface as the same ProviderError the default httpx transport gives, and connections must be
reused (and replaced when the server closed them while idle)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_gateway import nodelay

from learned_router.config import ProviderConfig
from learned_router.errors import (
    ContextLengthExceeded,
    ProviderError,
    ProviderResponseError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from learned_router.gateway.transport import LeanAsyncClient, PooledHTTP11Transport
from learned_router.providers import OpenAIAdapter, ProviderClient
from learned_router.simulator import SimProfile, create_sim_app
from learned_router.threaded_server import ServerHandle, serve_in_thread
from learned_router.types import ChatRequest, StreamChunk

REQ = ChatRequest.coerce({"messages": [{"role": "user", "content": "Explain keep-alive connections."}]})


@pytest.fixture(scope="module")
def sim() -> Iterator[tuple[SimProfile, ServerHandle]]:
    profile = SimProfile("sim", latency_s=0.0, hang_s=5.0, min_words=40, max_words=60)
    handle = nodelay(serve_in_thread(create_sim_app(profile)))
    yield profile, handle
    handle.stop()


def client_for(url: str, transport: PooledHTTP11Transport) -> tuple[ProviderClient, httpx.AsyncClient]:
    ahttp = LeanAsyncClient(transport=transport)
    cfg = ProviderConfig(name="sim", kind="openai", base_url=f"{url}/v1", model="sim-1", price_in_per_mtok=1,
                         price_out_per_mtok=1)
    return ProviderClient(cfg, OpenAIAdapter(), api_key="k", ahttp=ahttp), ahttp


def run(url: str, job: Any) -> Any:
    async def main() -> Any:
        transport = PooledHTTP11Transport()
        client, ahttp = client_for(url, transport)
        try:
            return await job(client, transport)
        finally:
            await ahttp.aclose()

    return asyncio.run(main())


def test_plain_and_streamed_answers_match_and_connections_are_reused(sim: tuple[SimProfile, ServerHandle]) -> None:
    profile, handle = sim
    profile.set_mode("ok")

    async def job(client: ProviderClient, transport: PooledHTTP11Transport) -> tuple[Any, list[StreamChunk], int]:
        replies = [await client.acomplete(REQ, timeout_s=5) for _ in range(5)]
        chunks = [c async for c in client.astream(REQ, timeout_s=5)]
        chunks = [c async for c in client.astream(REQ, timeout_s=5)]
        idle = sum(len(v) for v in transport._idle.values())
        return replies, chunks, idle

    replies, chunks, idle = run(handle.url, job)
    assert len({r.text for r in replies}) == 1 and replies[0].text.startswith("sim says:")
    assert replies[0].input_tokens > 0 and replies[0].output_tokens > 0
    assert "".join(c.text for c in chunks) == replies[0].text
    assert len(chunks) > 3 and chunks[-1].finish_reason == "stop"
    assert idle == 1  # seven sequential calls (streams drained after [DONE]), one connection


@pytest.mark.parametrize(("mode", "error", "status"), [
    ("error500", ProviderUnavailable, 500),
    ("rate_limit", RateLimited, 429),
    ("context_length", ContextLengthExceeded, 400),
    ("malformed", ProviderResponseError, 200),
    ("reset", ProviderUnavailable, None),
    ("timeout", ProviderTimeout, None),
])
def test_failures_map_to_the_same_provider_errors(sim: tuple[SimProfile, ServerHandle], mode: str,
                                                  error: type[ProviderError], status: int | None) -> None:
    profile, handle = sim
    profile.set_mode(mode)

    async def job(client: ProviderClient, transport: PooledHTTP11Transport) -> ProviderError:
        with pytest.raises(error) as info:
            await client.acomplete(REQ, timeout_s=0.3)
        profile.set_mode("ok")  # the same client keeps working afterwards
        assert (await client.acomplete(REQ, timeout_s=5)).text
        return info.value

    err = run(handle.url, job)
    assert err.status_code == status
    if isinstance(err, RateLimited):
        assert err.retry_after_s == 1


def test_stream_cut_raises_after_the_first_chunks(sim: tuple[SimProfile, ServerHandle]) -> None:
    profile, handle = sim
    profile.set_mode("stream_cut")

    async def job(client: ProviderClient, transport: PooledHTTP11Transport) -> list[str]:
        got: list[str] = []
        with pytest.raises(ProviderUnavailable):
            async for chunk in client.astream(REQ, timeout_s=5):
                got.append(chunk.text)
        return got

    got = run(handle.url, job)
    profile.set_mode("ok")
    assert "".join(got).startswith("sim says:")


def one_shot_server() -> tuple[str, list[int], Any]:
    """A keep-alive-advertising server that closes every connection right after its first answer."""
    answers: list[int] = []
    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "fresh"},
                                    "finish_reason": "stop"}]}).encode()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        answers.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    def serve() -> None:
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
        state.update(loop=loop, server=server, port=server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(5)

    def stop() -> None:
        state["loop"].call_soon_threadsafe(state["loop"].stop)
        thread.join(5)

    return f"http://127.0.0.1:{state['port']}", answers, stop


def test_a_connection_closed_while_idle_is_replaced() -> None:
    url, answers, stop = one_shot_server()
    try:
        async def job(client: ProviderClient, transport: PooledHTTP11Transport) -> list[str]:
            texts = []
            for _ in range(3):
                texts.append((await client.acomplete(REQ, timeout_s=5)).text)
                await asyncio.sleep(0.1)  # the server closes the kept-alive connection meanwhile
            return texts

        assert run(url, job) == ["fresh"] * 3
        assert len(answers) == 3
    finally:
        stop()


def test_unreachable_upstream_is_provider_unavailable() -> None:
    async def job(client: ProviderClient, transport: PooledHTTP11Transport) -> None:
        with pytest.raises(ProviderUnavailable):
            await client.acomplete(REQ, timeout_s=2)

    run("http://127.0.0.1:9", job)


def test_transport_under_a_stock_httpx_client(sim: tuple[SimProfile, ServerHandle]) -> None:
    profile, handle = sim
    profile.set_mode("ok")
    body = {"model": "sim-1", "messages": [{"role": "user", "content": "hello"}]}

    async def main() -> tuple[dict[str, Any], list[str]]:
        async with httpx.AsyncClient(transport=PooledHTTP11Transport(), base_url=handle.url) as client:
            plain = (await client.post("/v1/chat/completions", json=body)).json()
            async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
                lines = [line async for line in resp.aiter_lines() if line]
            return plain, lines

    plain, lines = asyncio.run(main())
    assert plain["choices"][0]["message"]["content"].startswith("sim says:")
    assert lines[-1] == "data: [DONE]" and len(lines) > 4
