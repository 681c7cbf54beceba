"""Every provider adapter, through ProviderClient, against the simulated providers served on loopback:
plain and streamed answers, usage and cost, and each failure mapped to its ProviderError (sync and async)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from _servers import REQ, SECRET, USER_TEXT, make_client, reset_fleet
from learned_router.config import parse_config
from learned_router.errors import (
    ContextLengthExceeded,
    ProviderError,
    ProviderRejected,
    ProviderResponseError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from learned_router.providers import ADAPTERS, ProviderClient, build_clients
from learned_router.sim_fleet import SimFleet
from learned_router.simulator import SimProfile
from learned_router.types import ChatRequest, StreamChunk

KINDS = sorted(ADAPTERS)
TIMEOUT_S = 0.3


def _timeout(mode: str) -> float:
    """The client timeout for a failure mode: short where the timeout is what is tested, else long enough
    that a loaded machine's slow loopback connect cannot turn the expected error into a timeout."""
    return TIMEOUT_S if mode == "timeout" else 5.0


# mode → (error class, status code, retryable)
FAILURES = {
    "error500": (ProviderUnavailable, 500, True),
    "timeout": (ProviderTimeout, None, True),
    "rate_limit": (RateLimited, 429, True),
    "reset": (ProviderUnavailable, None, True),
    "malformed": (ProviderResponseError, None, True),
    "context_length": (ContextLengthExceeded, 400, True),
    "stream_cut": (ProviderUnavailable, None, True),
}


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with SimFleet([SimProfile("sim", latency_s=0.0, min_words=20, max_words=30),
                   SimProfile("quiet", latency_s=0.0, usage=False)]) as f:
        yield f


@pytest.fixture(autouse=True)
def _ok(fleet: SimFleet) -> None:
    reset_fleet(fleet)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _assert_contextualized(err: ProviderError, kind: str) -> None:
    assert err.provider == "sim" and err.model == "sim-1" and err.request_id == "req-123"
    assert SECRET not in str(err) and SECRET not in repr(err) and SECRET not in repr(err.args)
    assert not any(SECRET in str(v) for v in vars(err).values())


# -- answers ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_complete_reports_text_usage_and_cost(fleet: SimFleet, kind: str) -> None:
    with make_client(fleet, "sim", kind, price_in_per_mtok=3.0, price_out_per_mtok=15.0) as client:
        reply = client.complete(REQ, timeout_s=5)
    assert reply.text.startswith("sim says: ")
    assert reply.finish_reason == "stop"
    prompt = "You are terse.\n" + USER_TEXT
    assert reply.input_tokens == len(prompt) // 4  # what the simulator reports
    assert reply.output_tokens == len(reply.text) // 4
    assert client.cost_usd(reply.input_tokens, reply.output_tokens) == pytest.approx(
        (reply.input_tokens * 3.0 + reply.output_tokens * 15.0) / 1e6)
    assert client.arm == "sim::sim-1" and client.name == "sim" and client.model == "sim-1"


@pytest.mark.parametrize("kind", KINDS)
def test_stream_matches_plain_answer_and_ends_with_usage(fleet: SimFleet, kind: str) -> None:
    with make_client(fleet, "sim", kind) as client:
        plain = client.complete(REQ, timeout_s=5)
        chunks = list(client.stream(REQ, timeout_s=5))
    assert len(chunks) > 3
    assert "".join(c.text for c in chunks) == plain.text
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert (last.input_tokens, last.output_tokens) == (plain.input_tokens, plain.output_tokens)
    assert all(c.finish_reason is None and c.input_tokens is None for c in chunks[:-1])


@pytest.mark.parametrize("kind", KINDS)
def test_usage_is_estimated_when_the_provider_omits_it(fleet: SimFleet, kind: str) -> None:
    with make_client(fleet, "quiet", kind) as client:
        reply = client.complete(REQ, timeout_s=5)
        chunks = list(client.stream(REQ, timeout_s=5))
    prompt_tokens = len("You are terse.\n" + USER_TEXT) // 4
    assert reply.input_tokens == prompt_tokens
    assert reply.output_tokens == len(reply.text) // 4 > 0
    text = "".join(c.text for c in chunks)
    assert chunks[-1].input_tokens == len(REQ.prompt_text()) // 4
    assert chunks[-1].output_tokens == len(text) // 4 > 0


@pytest.mark.parametrize("kind", KINDS)
def test_max_tokens_cuts_the_answer_with_finish_reason_length(fleet: SimFleet, kind: str) -> None:
    req = ChatRequest.coerce({"messages": [{"role": "user", "content": USER_TEXT}], "max_tokens": 3})
    with make_client(fleet, "sim", kind) as client:
        reply = client.complete(req, timeout_s=5)
        last = list(client.stream(req, timeout_s=5))[-1]
    assert reply.finish_reason == "length" and len(reply.text) <= 12
    assert last.finish_reason == "length"


@pytest.mark.parametrize("kind", KINDS)
def test_json_mode_reaches_the_provider(fleet: SimFleet, kind: str) -> None:
    req = ChatRequest.coerce({"messages": [{"role": "user", "content": "Give me a record"}], "json_mode": True})
    with make_client(fleet, "sim", kind) as client:
        reply = client.complete(req, timeout_s=5)
    if kind == "anthropic":  # no API switch: an instruction in the system prompt, which the simulator ignores
        assert reply.text.startswith("sim says")
    else:
        assert reply.text.startswith('{"provider": "sim"')


# -- failures, sync -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", sorted(FAILURES))
def test_complete_failure_maps_to_provider_error(fleet: SimFleet, kind: str, mode: str) -> None:
    cls, status, retryable = FAILURES[mode]
    fleet.profiles["sim"].set_mode(mode)
    with make_client(fleet, "sim", kind) as client:
        started = time.perf_counter()
        with pytest.raises(cls) as info:
            client.complete(REQ, timeout_s=_timeout(mode))
        elapsed = time.perf_counter() - started
    err = info.value
    assert type(err) is cls
    assert err.status_code == (200 if mode in ("malformed",) else status)
    assert err.retryable is retryable
    _assert_contextualized(err, kind)
    if mode == "rate_limit":
        assert err.retry_after_s == 1.0
    if mode == "timeout":
        assert TIMEOUT_S * 0.9 < elapsed < TIMEOUT_S + 1.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", sorted(FAILURES))
def test_stream_failure_maps_to_provider_error(fleet: SimFleet, kind: str, mode: str) -> None:
    cls, status, retryable = FAILURES[mode]
    fleet.profiles["sim"].set_mode(mode)
    got: list[StreamChunk] = []
    with make_client(fleet, "sim", kind) as client, pytest.raises(cls) as info:
        for chunk in client.stream(REQ, timeout_s=_timeout(mode)):
            got.append(chunk)
    err = info.value
    assert type(err) is cls and err.retryable is retryable
    assert err.status_code == status
    _assert_contextualized(err, kind)
    if mode == "stream_cut":  # chunks arrived, then the connection dropped: still an error, raised late
        assert len(got) == 2 and all(c.text for c in got)
        assert "mid-stream" in str(err)
    else:
        assert got == []


def test_stream_sends_nothing_until_iterated(fleet: SimFleet) -> None:
    with make_client(fleet, "sim", "openai") as client:
        before = fleet.profiles["sim"].calls
        it = client.stream(REQ, timeout_s=5)
        assert fleet.profiles["sim"].calls == before
        assert next(iter(it)).text
        assert fleet.profiles["sim"].calls == before + 1
        it.close()  # type: ignore[attr-defined]


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        cfg = parse_config({"providers": [{"name": "gone", "kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                                           "model": "m", "price_in_per_mtok": 1, "price_out_per_mtok": 1}]})
        with build_clients(cfg)["gone"] as client:
            with pytest.raises(ProviderUnavailable) as info:
                client.complete(REQ, timeout_s=1)
            with pytest.raises(ProviderUnavailable):
                list(client.stream(REQ, timeout_s=1))
    assert info.value.provider == "gone" and info.value.status_code is None


def test_client_error_is_rejected_not_retryable(fleet: SimFleet) -> None:
    with make_client(fleet, "sim", "openai", base_url=fleet.urls["sim"] + "/nowhere") as client:
        with pytest.raises(ProviderRejected) as info:
            client.complete(REQ, timeout_s=5)
    assert info.value.status_code == 404 and info.value.retryable is False


# -- failures, async ------------------------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_async_complete_and_stream(fleet: SimFleet, kind: str) -> None:
    client = make_client(fleet, "sim", kind)
    try:
        reply = await client.acomplete(REQ, timeout_s=5)
        chunks = [c async for c in client.astream(REQ, timeout_s=5)]
    finally:
        await client.aclose()
    assert "".join(c.text for c in chunks) == reply.text
    assert chunks[-1].finish_reason == "stop" and chunks[-1].output_tokens == reply.output_tokens


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", sorted(FAILURES))
async def test_async_failures(fleet: SimFleet, kind: str, mode: str) -> None:
    cls, status, _ = FAILURES[mode]
    fleet.profiles["sim"].set_mode(mode)
    client = make_client(fleet, "sim", kind)
    try:
        with pytest.raises(cls) as plain:
            await client.acomplete(REQ, timeout_s=_timeout(mode))
        got: list[StreamChunk] = []
        with pytest.raises(cls) as streamed:
            async for chunk in client.astream(REQ, timeout_s=_timeout(mode)):
                got.append(chunk)
    finally:
        await client.aclose()
    for err in (plain.value, streamed.value):
        assert type(err) is cls
        _assert_contextualized(err, kind)
    assert streamed.value.status_code == status
    assert len(got) == (2 if mode == "stream_cut" else 0)


# -- keys, logging, construction ------------------------------------------------------------------------------
def test_key_never_leaks_even_when_the_provider_echoes_it(caplog: pytest.LogCaptureFixture) -> None:
    from learned_router.threaded_server import serve_in_thread

    async def echo_auth(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = dict(scope["headers"])
        body = b'{"error": {"message": "Incorrect API key provided: ' + headers.get(b"authorization", b"") + b'"}}'
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    caplog.set_level(logging.DEBUG)
    with serve_in_thread(echo_auth) as server:
        cfg = parse_config({"providers": [{"name": "echo", "kind": "openai", "base_url": f"{server.url}/v1",
                                           "model": "m", "api_key": "env:ECHO_KEY", "price_in_per_mtok": 1,
                                           "price_out_per_mtok": 1}]})
        with build_clients(cfg, environ={"ECHO_KEY": SECRET})["echo"] as client:
            assert SECRET not in repr(client)
            with pytest.raises(ProviderRejected) as info:
                client.complete(REQ, timeout_s=5)
    err = info.value
    assert "Incorrect API key provided" in str(err) and "[redacted]" in str(err)
    assert SECRET not in str(err) and SECRET not in repr(err) and err.status_code == 401
    assert SECRET not in caplog.text


def test_build_clients_resolves_keys_and_shares_injected_clients(fleet: SimFleet) -> None:
    cfg = parse_config({"providers": [
        fleet.provider_entry("sim", kind="openai", api_key="env:SIM_KEY"),
        fleet.provider_entry("quiet", kind="anthropic"),
    ]})
    http = httpx.Client()
    clients = build_clients(cfg, environ={"SIM_KEY": SECRET}, http=http)
    assert set(clients) == {"sim", "quiet"}
    assert isinstance(clients["sim"], ProviderClient) and clients["quiet"].config.kind == "anthropic"
    assert clients["quiet"].complete(REQ, timeout_s=5).text
    assert clients["sim"].complete(REQ, timeout_s=5).text
    for c in clients.values():
        c.close()
    assert not http.is_closed  # injected clients belong to the caller
    http.close()
