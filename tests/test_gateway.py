"""The gateway end to end: the official ``openai`` client (sync, async, streaming) against ``create_app``
served by uvicorn on loopback, routing to simulated upstream providers, one of which fails on demand."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from learned_router import Router
from learned_router.gateway import create_app
from learned_router.gateway.transport import LeanAsyncClient, PooledHTTP11Transport
from learned_router.sim_fleet import SimFleet
from learned_router.simulator import SimProfile
from learned_router.threaded_server import ServerHandle, serve_in_thread

MSG = [{"role": "user", "content": "Explain what a circuit breaker is."}]
ENV = {"SIM_FLAKY_KEY": "sk-flaky-0123456789abcdef", "SIM_GOOD_KEY": "sk-good-0123456789abcdef"}


def nodelay(handle: ServerHandle) -> ServerHandle:
    """Turn off Nagle's algorithm on a server's listening sockets (accepted sockets inherit it). Without it
    every keep-alive response whose headers and body go out in two writes waits ~40 ms for a delayed ACK:
    a socket made with ``socket.socket(AF_INET, SOCK_STREAM)`` has ``proto == 0``, and asyncio only sets
    TCP_NODELAY on sockets whose proto is IPPROTO_TCP."""
    for server in handle.server.servers:
        for sock in server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return handle


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with SimFleet([SimProfile("flaky", latency_s=0.002, cut_after_chunks=2, min_words=30, max_words=40),
                   SimProfile("good", latency_s=0.002, min_words=30, max_words=40)]) as f:
        for handle in f.servers.values():
            nodelay(handle)
        yield f


def make_config(fleet: SimFleet, **extra: Any) -> dict[str, Any]:
    """``flaky`` is the cheapest, so the ``cost`` strategy tries it first and fails over to ``good``."""
    return {
        "providers": [
            fleet.provider_entry("flaky", price_in_per_mtok=0.1, price_out_per_mtok=0.2, api_key="env:SIM_FLAKY_KEY"),
            fleet.provider_entry("good", price_in_per_mtok=1.0, price_out_per_mtok=2.0, api_key="env:SIM_GOOD_KEY"),
        ],
        "routing": {"strategy": "cost", "presets": {"best": {"strategy": "quality"},
                                                   "fast": {"strategy": "latency"}}},
        "failover": {"attempt_timeout_s": 0.5, "deadline_s": 10},
        "breaker": {"failure_threshold": 100},
        **extra,
    }


class Gateway:
    """A router over ``fleet`` served by ``create_app`` on loopback, plus clients pointed at it.

    Plain-HTTP clients are built with ``verify=False`` only because creating a TLS context costs ~0.1 s and
    every connection here is plain HTTP on loopback."""

    def __init__(self, fleet: SimFleet, http: httpx.Client, *, config: dict[str, Any] | None = None,
                 app_options: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> None:
        for p in fleet.profiles.values():
            p.set_mode("ok")
        self.fleet = fleet
        self.http = http
        self._upstream = LeanAsyncClient(transport=PooledHTTP11Transport())  # as ``serve`` does
        self.router = Router.from_config(config or make_config(fleet), environ=environ or ENV,
                                         ahttp=self._upstream)
        self.app = create_app(self.router, **(app_options or {}))
        self.server: ServerHandle = nodelay(serve_in_thread(self.app))
        self.url = self.server.url

    def client(self, key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, http_client=self.http)

    def aclient(self, key: str = "unused") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0,
                                  http_client=httpx.AsyncClient(verify=False, timeout=10))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(f"{self.url}{path}", **kwargs)

    def calls(self) -> int:
        return sum(p.calls for p in self.fleet.profiles.values())

    def metrics(self) -> str:
        return self.http.get(f"{self.url}/metrics").text

    def close(self) -> None:
        self.server.stop()
        self.router.close()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(verify=False, timeout=10) as client:
        yield client


@pytest.fixture
def gw(fleet: SimFleet, http: httpx.Client) -> Iterator[Gateway]:
    g = Gateway(fleet, http)
    yield g
    g.close()


def metric(text: str, name: str, /, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        sample, _, rest = key.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if sample == name and got == want:
            return float(value)
    return 0.0


# -- plain completions ----------------------------------------------------------------------------------------
def test_sync_client_gets_an_openai_completion_with_routing_headers(gw: Gateway) -> None:
    raw = gw.client().chat.completions.with_raw_response.create(model="auto", messages=MSG)
    c = raw.parse()
    assert c.object == "chat.completion"
    assert c.choices[0].message.content.startswith("flaky says:")
    assert c.choices[0].finish_reason == "stop"
    assert c.usage is not None and c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
    assert c.model == "flaky::sim-1"
    assert raw.headers["x-learned-router-provider"] == "flaky"
    assert c.id == f"chatcmpl-{raw.headers['x-learned-router-request-id']}"
    cost = float(raw.headers["x-learned-router-cost-usd"])
    assert cost == pytest.approx((c.usage.prompt_tokens * 0.1 + c.usage.completion_tokens * 0.2) / 1e6)


def test_async_client_concurrent_requests(gw: Gateway) -> None:
    async def run() -> list[Any]:
        client = gw.aclient()
        try:
            return await asyncio.gather(*[
                client.chat.completions.create(model="auto", messages=[{"role": "user", "content": f"Q {i}"}])
                for i in range(12)])
        finally:
            await client.close()

    results = asyncio.run(run())
    assert len({r.id for r in results}) == 12
    assert all(r.choices[0].message.content for r in results)
    assert metric(gw.metrics(), "learned_router_http_requests_total", route="/v1/chat/completions",
                  status="200") == 12


def test_model_pins_an_arm_a_provider_or_picks_a_preset(gw: Gateway) -> None:
    client = gw.client()
    for model, provider in (("good", "good"), ("good::sim-1", "good"), ("flaky", "flaky"), ("best", "flaky"),
                            ("auto", "flaky")):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MSG)
        assert raw.headers["x-learned-router-provider"] == provider, model
    models = {m.id: m for m in client.models.list().data}
    assert {"auto", "best", "fast", "flaky::sim-1", "good::sim-1"} <= set(models)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nonexistent", messages=MSG)
    assert info.value.body["code"] == "model_not_found"


def test_weights_session_and_strategy_headers_reach_the_router(gw: Gateway) -> None:
    client = gw.client()
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_headers={"x-learned-router-strategy": "quality",
                                                   "x-learned-router-weights": "quality=1,cost=0.5",
                                                   "x-learned-router-session": "s-1"})
    assert raw.parse().learned_router["strategy"] == "quality"
    c = client.chat.completions.create(model="auto", messages=MSG,
                                       extra_body={"strategy": "latency", "weights": {"quality": 1, "cost": 2},
                                                   "session_id": "s-2"})
    assert c.learned_router["strategy"] == "latency"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=MSG,
                                       extra_headers={"x-learned-router-weights": "quality=lots"})
    assert info.value.body["param"] == "x-learned-router-weights"


# -- failover ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["error500", "timeout", "reset", "malformed", "rate_limit"])
def test_failing_provider_fails_over_to_the_next(gw: Gateway, mode: str) -> None:
    gw.fleet.profiles["flaky"].set_mode(mode)
    raw = gw.client().chat.completions.with_raw_response.create(model="auto", messages=MSG)
    assert raw.headers["x-learned-router-provider"] == "good"
    assert raw.parse().choices[0].message.content.startswith("good says:")
    text = gw.metrics()
    assert metric(text, "learned_router_upstream_attempts_total", provider="flaky", status="error") == 1
    kinds = [line for line in text.splitlines() if line.startswith('learned_router_provider_errors_total{')]
    assert len(kinds) == 1 and 'provider="flaky"' in kinds[0]


def test_every_provider_failing_gives_502_with_the_attempts(gw: Gateway) -> None:
    for p in gw.fleet.profiles.values():
        p.set_mode("error500")
    with pytest.raises(openai.APIStatusError) as info:
        gw.client().chat.completions.create(model="auto", messages=MSG)
    err = info.value
    assert err.status_code == 502
    assert err.body["type"] == "upstream_error" and err.body["code"] == "all_attempts_failed"
    assert [a["arm"] for a in err.body["attempts"]] == ["flaky::sim-1", "good::sim-1"]
    assert all(a["status_code"] == 500 for a in err.body["attempts"])
    assert err.response.headers["x-learned-router-request-id"]
    assert "HTTP 500" in err.body["message"]


# -- streaming --------------------------------------------------------------------------------------------------
def test_streaming_relays_chunks_then_finish_usage_and_done(gw: Gateway) -> None:
    client = gw.client()
    plain = client.chat.completions.create(model="auto", messages=MSG).choices[0].message.content
    chunks = list(client.chat.completions.create(model="auto", messages=MSG, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].learned_router["provider"] == "flaky" and chunks[-1].learned_router["cost_usd"] > 0
    with gw.http.stream("POST", f"{gw.url}/v1/chat/completions",
                      json={"model": "auto", "messages": MSG, "stream": True}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-learned-router-provider"] == "flaky"
        events = [line for line in resp.iter_lines() if line]
    assert events[-1] == "data: [DONE]"


def test_async_streaming(gw: Gateway) -> None:
    async def run() -> str:
        client = gw.aclient()
        try:
            stream = await client.chat.completions.create(model="good", messages=MSG, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        finally:
            await client.close()

    assert asyncio.run(run()).startswith("good says:")


def test_stream_fails_over_before_the_first_byte(gw: Gateway) -> None:
    gw.fleet.profiles["flaky"].set_mode("error500")
    raw = gw.client().chat.completions.with_raw_response.create(model="auto", messages=MSG, stream=True)
    assert raw.headers["x-learned-router-provider"] == "good"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text.startswith("good says:")


def test_stream_cut_mid_way_ends_with_an_error_event_never_a_clean_finish(gw: Gateway) -> None:
    gw.fleet.profiles["flaky"].set_mode("stream_cut")
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for c in gw.client().chat.completions.create(model="auto", messages=MSG, stream=True):
            if c.choices:
                assert c.choices[0].finish_reason is None
                received.append(c.choices[0].delta.content or "")
    assert "".join(received).startswith("flaky says:")
    assert info.value.body["code"] == "stream_interrupted"
    with gw.http.stream("POST", f"{gw.url}/v1/chat/completions",
                      json={"model": "auto", "messages": MSG, "stream": True}) as resp:
        assert resp.status_code == 200
        events = [line.removeprefix("data: ") for line in resp.iter_lines() if line]
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["type"] == "upstream_error"
    assert all('"finish_reason":"stop"' not in e for e in events)
    text = gw.metrics()
    assert metric(text, "learned_router_stream_interruptions_total", provider="flaky") == 2
    assert metric(text, "learned_router_in_flight_requests") == 0


def test_all_providers_failing_before_a_stream_starts_is_a_json_502(gw: Gateway) -> None:
    for p in gw.fleet.profiles.values():
        p.set_mode("error500")
    resp = gw.post("/v1/chat/completions", json={"model": "auto", "messages": MSG, "stream": True})
    assert resp.status_code == 502
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == "all_attempts_failed"


# -- feedback ---------------------------------------------------------------------------------------------------
def test_feedback_for_a_served_request(gw: Gateway) -> None:
    raw = gw.client().chat.completions.with_raw_response.create(model="auto", messages=MSG)
    rid = raw.headers["x-learned-router-request-id"]
    ok = gw.post("/v1/feedback", json={"request_id": rid, "quality": 0.25})
    assert ok.status_code == 200 and ok.json() == {"request_id": rid, "accepted": True}
    assert gw.router.stats.get("flaky::sim-1").quality < 0.8  # the live quality moved towards 0.25
    missing = gw.post("/v1/feedback", json={"request_id": "nope", "quality": 0.5})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "request_not_found"
    bad = gw.post("/v1/feedback", json={"request_id": rid, "quality": 1.5})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "quality"


def test_client_going_away_mid_stream_closes_the_upstream_and_logs_the_request_as_failed(gw: Gateway) -> None:
    import time

    good = gw.fleet.profiles["good"]
    good.set_latency(per_token_s=0.02)  # a stream of about a second
    try:
        with gw.http.stream("POST", f"{gw.url}/v1/chat/completions",
                            json={"model": "good", "messages": MSG, "stream": True}) as resp:
            first = next(line for line in resp.iter_lines() if line)
        assert first.startswith("data: {")
        deadline = time.monotonic() + 5
        while gw.router.analytics.failed_requests < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gw.router.analytics.failed_requests == 1
        assert metric(gw.metrics(), "learned_router_in_flight_requests") == 0
        assert gw.router.stats.get("good::sim-1").in_flight == 0
    finally:
        good.set_latency(per_token_s=0.0)
