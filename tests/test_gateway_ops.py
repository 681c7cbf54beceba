"""Tenants and keys, secrets, budgets, ``/metrics`` and ``/health`` of the gateway, against real loopback
servers (simulated providers, plus one hostile upstream that echoes the key it was sent)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from test_gateway import ENV as ENV_KEYS
from test_gateway import MSG, Gateway, fleet, http, make_config, metric, nodelay  # noqa: F401 - fixtures

from learned_router.gateway.metrics import GatewayMetrics
from learned_router.sim_fleet import SimFleet
from learned_router.threaded_server import serve_in_thread
from learned_router.types import Decision

KEYS = {"acme": "acme-secret-key", "beta": "beta-secret-key", "broke": "broke-secret-key"}


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tenant_config(fleet: SimFleet, log_path: Path | None = None) -> dict[str, Any]:  # noqa: F811
    cfg = make_config(fleet)
    cfg["tenants"] = {name: {"keys_sha256": [sha(key)]} for name, key in KEYS.items()}
    cfg["budgets"] = {"tenants": {"broke": 0.0}, "providers": {"good": 5.0}}
    if log_path is not None:
        cfg["log"] = {"path": str(log_path)}
    return cfg


@pytest.fixture
def authed(fleet: SimFleet, http: httpx.Client, tmp_path: Path) -> Iterator[Gateway]:  # noqa: F811
    g = Gateway(fleet, http, config=tenant_config(fleet, tmp_path / "log" / "decisions.sqlite"))
    yield g
    g.close()


# -- keys and tenants -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Basic YWNtZTprZXk=", "Bearer", "acme-secret-key"])
def test_missing_or_wrong_key_is_401_and_reaches_no_provider(authed: Gateway, authorization: str | None) -> None:
    before = authed.calls()
    headers = {"authorization": authorization} if authorization is not None else {}
    for path, body in (("/v1/chat/completions", {"model": "auto", "messages": MSG}),
                       ("/v1/feedback", {"request_id": "x", "quality": 1})):
        resp = authed.post(path, json=body, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"] == {"message": resp.json()["error"]["message"], "type": "invalid_request_error",
                                        "param": None, "code": "invalid_api_key"}
    assert authed.http.get(f"{authed.url}/v1/models", headers=headers).status_code == 401
    assert authed.calls() == before


def test_key_selects_the_tenant_for_feedback(authed: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        authed.client("wrong").chat.completions.create(model="auto", messages=MSG)
    raw = authed.client(KEYS["acme"]).chat.completions.with_raw_response.create(model="auto", messages=MSG)
    assert raw.status_code == 200
    rid = raw.headers["x-learned-router-request-id"]
    beta = authed.post("/v1/feedback", json={"request_id": rid, "quality": 0.9},
                       headers={"authorization": f"Bearer {KEYS['beta']}"})
    assert beta.status_code == 404
    acme = authed.post("/v1/feedback", json={"request_id": rid, "quality": 0.9},
                       headers={"authorization": f"Bearer {KEYS['acme']}"})
    assert acme.status_code == 200
    assert authed.router.log.flush(timeout=5)
    assert authed.router.log.get(rid).tenant == "acme"


def test_a_key_cannot_speak_for_another_tenant(authed: Gateway) -> None:
    client = authed.client(KEYS["acme"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="auto", messages=MSG, extra_headers={"x-learned-router-tenant": "beta"})
    assert info.value.body["code"] == "tenant_mismatch"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="auto", messages=MSG, extra_body={"tenant": "beta"})
    assert client.chat.completions.create(model="auto", messages=MSG, extra_body={"tenant": "acme"}).choices


def test_tenant_over_budget_gets_429(authed: Gateway) -> None:
    before = authed.calls()
    with pytest.raises(openai.RateLimitError) as info:
        authed.client(KEYS["broke"]).chat.completions.create(model="auto", messages=MSG)
    assert info.value.status_code == 429
    assert info.value.body["type"] == "budget_exceeded" and info.value.body["code"] == "budget_exceeded"
    assert authed.calls() == before
    assert authed.client(KEYS["acme"]).chat.completions.create(model="auto", messages=MSG).choices


def test_without_configured_keys_auth_is_off(gw: Gateway) -> None:
    for key in ("anything", "sk-whatever"):
        assert gw.client(key).chat.completions.create(model="auto", messages=MSG).choices
    assert gw.post("/v1/chat/completions", json={"model": "auto", "messages": MSG}).status_code == 200


@pytest.fixture
def gw(fleet: SimFleet, http: httpx.Client) -> Iterator[Gateway]:  # noqa: F811
    g = Gateway(fleet, http)
    yield g
    g.close()


# -- secrets ----------------------------------------------------------------------------------------------------
SECRET = "DISTINCTIVE-UPSTREAM-KEY-41c7e2b9"


def echo_key_app() -> Any:
    """An upstream that puts the key it was sent into its error messages (plain and mid-stream)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        body = await request.json()
        auth = request.headers.get("authorization", "")
        if body.get("stream"):
            chunk = {"choices": [{"index": 0, "delta": {"content": "partial "}, "finish_reason": None}]}
            error = {"error": {"message": f"key {auth} was revoked mid-stream", "type": "server_error"}}
            text = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(error)}\n\n"
            return Response(text, media_type="text/event-stream")
        return JSONResponse({"error": {"message": f"upstream failure for key {auth}", "type": "server_error"}},
                            status_code=500)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def test_provider_keys_never_reach_answers_logs_or_metrics(fleet: SimFleet, http: httpx.Client,  # noqa: F811
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    upstream = nodelay(serve_in_thread(echo_key_app()))
    cfg = make_config(fleet)
    cfg["providers"] = [{"name": "echo", "kind": "openai", "base_url": f"{upstream.url}/v1", "model": "m",
                         "api_key": "env:ECHO_KEY", "price_in_per_mtok": 1, "price_out_per_mtok": 1}]
    g = Gateway(fleet, http, config=cfg, environ={"ECHO_KEY": SECRET})
    try:
        seen: list[str] = []
        resp = g.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
        assert resp.status_code == 502 and resp.json()["error"]["attempts"][0]["status_code"] == 500
        seen += [resp.text, str(resp.headers)]
        with g.http.stream("POST", f"{g.url}/v1/chat/completions",
                           json={"model": "auto", "messages": MSG, "stream": True}) as stream:
            text = stream.read().decode()
        assert '"content":"partial "' in text and "stream_interrupted" in text
        seen += [text, str(stream.headers), g.metrics(), g.http.get(f"{g.url}/health").text,
                 g.http.get(f"{g.url}/v1/models").text, caplog.text]
        assert caplog.records, "the failures should have been logged"
        for blob in seen:
            assert SECRET not in blob
    finally:
        g.close()
        upstream.stop()


# -- metrics and health -----------------------------------------------------------------------------------------
def test_metrics_after_mixed_traffic(authed: Gateway) -> None:
    client = authed.client(KEYS["acme"])
    client.chat.completions.create(model="auto", messages=MSG)
    authed.fleet.profiles["flaky"].set_mode("error500")
    client.chat.completions.create(model="auto", messages=MSG)  # fails over to good
    list(client.chat.completions.create(model="auto", messages=MSG, stream=True))
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="auto", messages=[])
    text = authed.metrics()
    assert metric(text, "learned_router_http_requests_total", route="/v1/chat/completions", status="200") == 3
    assert metric(text, "learned_router_http_requests_total", route="/v1/chat/completions", status="422") == 1
    assert metric(text, "learned_router_request_errors_total", type="invalid_request_error",
                  code="invalid_value") == 1
    assert metric(text, "learned_router_request_duration_seconds_count", stream="false") == 2
    assert metric(text, "learned_router_request_duration_seconds_count", stream="true") == 1
    assert metric(text, "learned_router_routing_overhead_seconds_count", stream="false") == 2
    assert metric(text, "learned_router_cost_usd_total", provider="flaky") > 0
    assert metric(text, "learned_router_cost_usd_total", provider="good") > 0
    assert metric(text, "learned_router_tokens_total", provider="good", direction="output") > 0
    assert metric(text, "learned_router_provider_errors_total", provider="flaky", kind="unavailable") == 2
    assert metric(text, "learned_router_upstream_attempts_total", provider="good", status="ok") == 2
    assert metric(text, "learned_router_decisions_total", strategy="cost") == 3
    assert metric(text, "learned_router_exploration_rate") == 0
    assert metric(text, "learned_router_breaker_state", arm="flaky::sim-1", state="closed") == 1
    assert metric(text, "learned_router_budget_limit_usd", scope="provider", name="good") == 5
    assert 0 < metric(text, "learned_router_budget_used_usd", scope="provider", name="good") < 5
    assert metric(text, "learned_router_in_flight_requests") == 0


def test_exploration_rate_counts_decisions_whose_chosen_arm_had_propensity_below_one(fleet: SimFleet) -> None:  # noqa: F811
    from learned_router import Router

    metrics = GatewayMetrics(Router.from_config(make_config(fleet)))
    arm = "flaky::sim-1"
    for p in (1.0, 0.7, 0.2, 1.0):
        metrics.decision(Decision(request_id="r", arm=arm, provider="flaky", model="sim-1", strategy="learned",
                                  ranking=(arm,), scores={}, propensities={arm: p}, excluded={}))
    assert metrics.exploration_rate() == 0.5
    assert metric(metrics.render().decode(), "learned_router_exploratory_decisions_total", strategy="learned") == 2


def test_health_reports_readiness(fleet: SimFleet, http: httpx.Client, tmp_path: Path) -> None:  # noqa: F811
    cfg = tenant_config(fleet, tmp_path / "log" / "decisions.sqlite")
    cfg["breaker"] = {"failure_threshold": 1, "reset_timeout_s": 600}
    g = Gateway(fleet, http, config=cfg)
    try:
        body = g.http.get(f"{g.url}/health").json()
        assert body["ready"] and body["providers"] == {"total": 2, "eligible": 2, "excluded": {}}
        assert body["log_store"]["configured"] and body["log_store"]["writable"]
        for p in fleet.profiles.values():
            p.set_mode("error500")
        key = {"authorization": f"Bearer {KEYS['acme']}"}
        assert g.post("/v1/chat/completions", json={"model": "auto", "messages": MSG}, headers=key).status_code == 502
        resp = g.http.get(f"{g.url}/health")  # both breakers are open now
        assert resp.status_code == 503 and resp.json()["providers"]["eligible"] == 0
        assert set(resp.json()["providers"]["excluded"].values()) == {"circuit breaker open"}
        text = g.metrics()
        assert metric(text, "learned_router_breaker_state", arm="good::sim-1", state="open") == 1
        chat = g.post("/v1/chat/completions", json={"model": "auto", "messages": MSG}, headers=key)
        assert chat.status_code == 503 and chat.json()["error"]["type"] == "no_eligible_provider"
        assert "circuit breaker open" in chat.json()["error"]["message"]
    finally:
        g.close()


def test_health_is_not_ready_when_the_log_folder_is_gone(fleet: SimFleet, http: httpx.Client,  # noqa: F811
                                                         tmp_path: Path) -> None:
    g = Gateway(fleet, http, config=tenant_config(fleet, tmp_path / "log" / "decisions.sqlite"))
    try:
        assert g.http.get(f"{g.url}/health").status_code == 200
        shutil.rmtree(tmp_path / "log")
        resp = g.http.get(f"{g.url}/health")
        assert resp.status_code == 503 and resp.json()["log_store"]["writable"] is False
    finally:
        g.close()


# -- the CLI ----------------------------------------------------------------------------------------------------
def test_cli_serve_runs_the_gateway(fleet: SimFleet, tmp_path: Path) -> None:  # noqa: F811
    import os
    import socket
    import subprocess
    import sys
    import time

    cfg = tmp_path / "router.yaml"
    cfg.write_text(json.dumps(make_config(fleet)))  # JSON is YAML
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **ENV_KEYS}
    proc = subprocess.Popen([sys.executable, "-m", "learned_router", "serve", "--config", str(cfg), "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0,
                               http_client=httpx.Client(verify=False, timeout=10))
        fleet.profiles["flaky"].set_mode("ok")
        assert client.chat.completions.create(model="auto", messages=MSG).choices[0].message.content
        assert "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(model="good", messages=MSG, stream=True) if c.choices)
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode in (0, -15)


def test_shutdown_closes_the_router_then_runs_the_hooks(fleet: SimFleet) -> None:  # noqa: F811
    """The ASGI lifespan protocol, as uvicorn drives it when ``serve`` stops."""
    import asyncio

    from learned_router import Router
    from learned_router.gateway import create_app
    from learned_router.stores.memory import MemoryDecisionLog
    from learned_router.types import ChatRequest

    store = MemoryDecisionLog()
    router = Router.from_config(make_config(fleet), environ=ENV_KEYS, log=store)
    seen: list[str] = []

    async def hook() -> None:
        try:
            store.append_refusal(ChatRequest.coerce({"messages": MSG}), RuntimeError("probe"))
            seen.append("log still open")
        except RuntimeError:
            seen.append("log closed")

    async def drive() -> list[dict[str, Any]]:
        app = create_app(router, close_router=True, on_shutdown=[hook])
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for kind in ("lifespan.startup", "lifespan.shutdown"):
            inbox.put_nowait({"type": kind})
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
        return sent

    sent = asyncio.run(drive())
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert seen == ["log closed"]


def test_joined_writes_keep_order_and_close_sends_what_is_pending() -> None:
    """``serve``'s transport wrapper over a real loopback connection: writes of one event-loop step arrive
    in order, and closing right after writing loses nothing."""
    import asyncio

    from learned_router.gateway.serve import _JoinedWrites

    async def main() -> bytes:
        received = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.set_result(await reader.read())
            writer.close()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        joined = _JoinedWrites(writer.transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        joined.write(b"first")
        await asyncio.sleep(0)  # the end of the step: both go out as one write
        joined.write(b" second")
        assert joined.get_extra_info("peername")[1] == port  # everything else is the transport's
        joined.close()  # before the step ends
        data = await asyncio.wait_for(received, 5)
        server.close()
        await server.wait_closed()
        return data

    assert asyncio.run(main()) == b"HTTP/1.1 200 OK\r\n\r\nfirst second"
