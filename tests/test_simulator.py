"""The simulated providers: deterministic answers, quality per task, latency, run-time modes, the three
wire formats as the official OpenAI SDK and plain HTTP see them, and the server lifecycle."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from _servers import USER_TEXT
from learned_router.config import parse_config
from learned_router.sim_fleet import SimFleet
from learned_router.simulator import MODES, SimProfile, create_sim_app, guess_task
from learned_router.threaded_server import serve_in_thread


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    profiles = [
        SimProfile("strong", model="big-1", quality={"code": 0.95}, default_quality=0.85, quality_noise=0.05),
        SimProfile("weak", model="small-1", quality={"code": 0.3}, default_quality=0.6, quality_noise=0.05),
        SimProfile("slow", latency_s=0.25, per_token_s=0.002),
    ]
    with SimFleet(profiles) as f:
        yield f


@pytest.fixture(autouse=True)
def _ok(fleet: SimFleet) -> None:
    for p in fleet.profiles.values():
        p.set_mode("ok")


# One client for the module: creating an httpx client per call costs tens of milliseconds (TLS setup).
HTTP = httpx.Client(timeout=5)


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    HTTP.close()


def _chat(url: str, text: str, **extra: object) -> httpx.Response:
    body = {"model": "x", "messages": [{"role": "user", "content": text}], **extra}
    return HTTP.post(f"{url}/v1/chat/completions", json=body)


def test_guess_task_uses_keywords() -> None:
    assert guess_task("Write a Python function to parse dates") == "code"
    assert guess_task("Translate 'good morning' into French") == "translation"
    assert guess_task("Please summarize this article") == "summarization"
    assert guess_task("Solve the equation 2x + 3 = 7") == "math"
    assert guess_task("Write a haiku about autumn") == "creative_writing"
    assert guess_task("What is the capital of Peru?") == "knowledge_qa"
    assert guess_task("hey, how are you doing") == "chat"


def test_answers_are_deterministic_per_profile_and_prompt(fleet: SimFleet) -> None:
    url = fleet.urls["strong"]
    first, second = _chat(url, USER_TEXT), _chat(url, USER_TEXT)
    other = _chat(url, "Tell me about the weather in spring")
    weak = _chat(fleet.urls["weak"], USER_TEXT)
    text = first.json()["choices"][0]["message"]["content"]
    assert text == second.json()["choices"][0]["message"]["content"]
    assert text != other.json()["choices"][0]["message"]["content"]
    assert text != weak.json()["choices"][0]["message"]["content"]
    assert first.headers["x-sim-quality"] == second.headers["x-sim-quality"]
    assert first.headers["x-sim-task"] == "code" and first.headers["x-sim-provider"] == "strong"


def test_quality_header_follows_the_task_table(fleet: SimFleet) -> None:
    code = [f"Implement a function number {i} in python" for i in range(12)]
    chat = [f"Good morning friend, day {i} here" for i in range(12)]

    def mean_quality(name: str, prompts: list[str]) -> float:
        qs = [float(_chat(fleet.urls[name], p).headers["x-sim-quality"]) for p in prompts]
        assert all(0.0 <= q <= 1.0 for q in qs)
        assert qs == [fleet.profiles[name].true_quality(p) for p in prompts]
        return sum(qs) / len(qs)

    strong_code, weak_code = mean_quality("strong", code), mean_quality("weak", code)
    weak_chat = mean_quality("weak", chat)
    assert strong_code > 0.85 and weak_code < 0.4
    assert weak_chat > weak_code + 0.15  # the weak model is only weak at code


def test_set_quality_changes_the_header_at_run_time(fleet: SimFleet) -> None:
    prompt = "Implement quicksort in python"
    profile = fleet.profiles["weak"]
    before = float(_chat(fleet.urls["weak"], prompt).headers["x-sim-quality"])
    profile.set_quality("code", 0.9)
    try:
        after = float(_chat(fleet.urls["weak"], prompt).headers["x-sim-quality"])
    finally:
        profile.set_quality("code", 0.3)
    assert after > before + 0.4


def test_latency_base_plus_per_token(fleet: SimFleet) -> None:
    started = time.perf_counter()
    resp = _chat(fleet.urls["slow"], "hello")
    elapsed = time.perf_counter() - started
    out_tokens = resp.json()["usage"]["completion_tokens"]
    assert elapsed >= 0.25 + 0.002 * out_tokens - 0.01
    assert elapsed < 2.0


def test_jitter_comes_from_the_seeded_generator() -> None:
    def delays(seed: int) -> list[float]:
        p = SimProfile("j", latency_s=0.1, jitter_s=0.05, seed=seed)
        return [p.answer("hi", "hi", None, False).ttft_s for _ in range(20)]

    assert delays(3) == delays(3) != delays(4)
    assert all(0.1 <= d <= 0.15 for d in delays(3))


def test_modes_are_validated() -> None:
    profile = SimProfile("m")
    for mode in MODES:
        profile.set_mode(mode)
    with pytest.raises(ValueError, match="mode"):
        profile.set_mode("flaky")
    with pytest.raises(ValueError):
        SimProfile("bad", mode="nope")
    with pytest.raises(ValueError):
        profile.set_quality("code", 1.5)


@pytest.mark.parametrize(("mode", "status"), [("error500", 500), ("rate_limit", 429), ("context_length", 400)])
def test_error_modes_on_the_wire(fleet: SimFleet, mode: str, status: int) -> None:
    fleet.profiles["weak"].set_mode(mode)
    resp = _chat(fleet.urls["weak"], "hi")
    assert resp.status_code == status
    assert "message" in resp.json()["error"]
    if mode == "rate_limit":
        assert resp.headers["retry-after"] == "1"
    if mode == "context_length":
        assert resp.json()["error"]["code"] == "context_length_exceeded"


def test_reset_drops_the_connection(fleet: SimFleet) -> None:
    fleet.profiles["weak"].set_mode("reset")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        _chat(fleet.urls["weak"], "hi")
    fleet.profiles["weak"].set_mode("ok")
    assert _chat(fleet.urls["weak"], "hi").status_code == 200  # the server itself is fine


def test_malformed_and_long_prompts(fleet: SimFleet) -> None:
    fleet.profiles["weak"].set_mode("malformed")
    resp = _chat(fleet.urls["weak"], "hi")
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        resp.json()
    fleet.profiles["weak"].set_mode("ok")
    profile = SimProfile("tiny", max_context_tokens=10)
    with serve_in_thread(create_sim_app(profile)) as server:
        assert _chat(server.url, "x" * 100).status_code == 400
        assert _chat(server.url, "short").status_code == 200


def test_timeout_mode_holds_until_the_client_gives_up(fleet: SimFleet) -> None:
    fleet.profiles["weak"].set_mode("timeout")
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        HTTP.post(f"{fleet.urls['weak']}/v1/chat/completions", timeout=0.2,
                   json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert time.perf_counter() - started < 1.0


def test_official_openai_client_plain_and_streaming(fleet: SimFleet) -> None:
    client = openai.OpenAI(base_url=fleet.base_url("strong"), api_key="unused", max_retries=0, timeout=5)
    try:
        plain = client.chat.completions.create(model="big-1", messages=[{"role": "user", "content": USER_TEXT}])
        stream = client.chat.completions.create(model="big-1", messages=[{"role": "user", "content": USER_TEXT}],
                                                stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        models = client.models.list()
    finally:
        client.close()
    assert plain.choices[0].message.content and plain.usage and plain.usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert [m.id for m in models.data] == ["big-1"]


def test_anthropic_and_gemini_routes(fleet: SimFleet) -> None:
    url = fleet.urls["strong"]
    msg = HTTP.post(f"{url}/v1/messages", json={
        "model": "big-1", "max_tokens": 100, "system": "be brief",
        "messages": [{"role": "user", "content": USER_TEXT}]}).json()
    assert msg["type"] == "message" and msg["content"][0]["text"] and msg["usage"]["output_tokens"] > 0
    gem = HTTP.post(f"{url}/v1beta/models/big-1:generateContent", json={
        "contents": [{"role": "user", "parts": [{"text": USER_TEXT}]}]}).json()
    assert gem["candidates"][0]["finishReason"] == "STOP" and gem["usageMetadata"]["promptTokenCount"] > 0
    with HTTP.stream("POST", f"{url}/v1beta/models/big-1:streamGenerateContent?alt=sse",
                      json={"contents": [{"role": "user", "parts": [{"text": USER_TEXT}]}]}) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert len(events) > 2 and '"finishReason": "STOP"' in events[-1]
    assert HTTP.post(f"{url}/v1beta/models/big-1:nope", json={"contents": []}).status_code == 404
    assert HTTP.post(f"{url}/v1/chat/completions", content=b"{").status_code == 400


def test_calls_are_counted_under_concurrency(fleet: SimFleet) -> None:
    profile = fleet.profiles["weak"]
    before = profile.calls
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with httpx.Client(timeout=5) as c:
                for i in range(5):
                    c.post(f"{fleet.urls['weak']}/v1/chat/completions",
                           json={"model": "x", "messages": [{"role": "user", "content": f"q{i}"}]})
                    profile.set_mode("ok")
        except BaseException as exc:  # re-raised below in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and profile.calls == before + 20


def test_server_lifecycle_and_fleet_helpers() -> None:
    profile = SimProfile("solo", price_in_per_mtok=0.5, price_out_per_mtok=1.5)
    with serve_in_thread(create_sim_app(profile)) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        assert HTTP.get(f"{server.url}/health").json() == {"status": "ok", "provider": "solo", "mode": "ok"}
    with pytest.raises(httpx.ConnectError):
        HTTP.get(f"{server.url}/health", timeout=1)

    with pytest.raises(ValueError, match="unique"):
        SimFleet([SimProfile("a"), SimProfile("a")])
    with SimFleet([profile]) as fleet:
        root = fleet.urls["solo"]
        assert fleet.base_url("solo") == f"{root}/v1"
        assert fleet.base_url("solo", "anthropic") == fleet.base_url("solo", "gemini") == root
        entry = fleet.provider_entry("solo", kind="gemini", quality_prior=0.6)
        cfg = parse_config({"providers": [entry]})
        assert cfg.providers[0].price_out_per_mtok == 1.5 and cfg.providers[0].quality_prior == 0.6
    assert fleet.urls == {}
