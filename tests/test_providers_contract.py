"""The sans-I/O adapter contract, checked for every registered adapter, plus the shared SSE and error
helpers. No network: adapters only translate, so these tests hand them bytes."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping

import httpx
import pytest

from learned_router.errors import (
    ContextLengthExceeded,
    ProviderError,
    ProviderRejected,
    ProviderResponseError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from learned_router.providers import ADAPTERS, estimate_tokens
from learned_router.providers.base import error_message, iter_sse, parse_retry_after
from learned_router.types import ChatRequest

KEY = "key-CONTRACT-abcdef"
REQ = ChatRequest.coerce({
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"},
                 {"role": "assistant", "content": "Hi."},
                 {"role": "user", "content": [{"type": "text", "text": "Tell me a joke"}]}],
    "temperature": 0.5,
})
CONTEXT_BODIES = {
    "openai": {"error": {"message": "This model's maximum context length is 8192 tokens.",
                         "code": "context_length_exceeded"}},
    "anthropic": {"type": "error", "error": {"type": "invalid_request_error",
                                             "message": "prompt is too long: 210000 tokens > 200000 maximum"}},
    "gemini": {"error": {"code": 400, "message": "The input token count (1200000) exceeds the maximum number of "
                         "tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}},
}
# A minimal valid answer and SSE stream per adapter, in the provider's own format.
OK_BODIES = {
    "openai": {"choices": [{"message": {"content": "Hi!"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 11, "completion_tokens": 2}},
    "anthropic": {"content": [{"type": "text", "text": "Hi!"}], "stop_reason": "end_turn",
                  "usage": {"input_tokens": 11, "output_tokens": 2}},
    "gemini": {"candidates": [{"content": {"parts": [{"text": "Hi!"}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 2}},
}
STREAMS = {
    "openai": ['data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}', "",
               'data: {"choices":[{"delta":{"content":"!"},"finish_reason":"stop"}]}', "",
               'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":2}}', "", "data: [DONE]", ""],
    "anthropic": ["event: message_start",
                  'data: {"type":"message_start","message":{"usage":{"input_tokens":11,"output_tokens":1}}}', "",
                  "event: ping", 'data: {"type":"ping"}', "",
                  'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}', "",
                  'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"!"}}', "",
                  'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}', "",
                  'data: {"type":"message_stop"}', ""],
    "gemini": ['data: {"candidates":[{"content":{"parts":[{"text":"Hi"}]}}]}', "",
               'data: {"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP"}],'
               '"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":2}}', ""],
}


@pytest.fixture(params=sorted(ADAPTERS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _response(kind: str, body: bytes, status: int = 200) -> httpx.Response:
    request = ADAPTERS[kind].build_request(REQ, model="m", base_url="https://api.example", api_key=KEY,
                                           headers={}, stream=False, max_tokens=64)
    return httpx.Response(status, content=body, request=request)


def test_registry_covers_every_config_kind() -> None:
    from typing import get_args

    from learned_router.config import ProviderConfig

    kinds = set(get_args(ProviderConfig.model_fields["kind"].annotation))
    assert set(ADAPTERS) == kinds


def test_build_request_is_a_post_with_the_key_in_a_header_only(kind: str) -> None:
    for stream in (False, True):
        request = ADAPTERS[kind].build_request(REQ, model="m-1", base_url="https://api.example/", api_key=KEY,
                                               headers={"x-extra": "1"}, stream=stream, max_tokens=64)
        assert request.method == "POST"
        assert KEY not in str(request.url) and KEY not in request.content.decode()
        assert KEY in " ".join(request.headers.values())
        assert request.headers["x-extra"] == "1"
        body = json.loads(request.content)
        text = json.dumps(body)
        assert "Be brief." in text and "Tell me a joke" in text and "64" in text
        assert "//" not in str(request.url).removeprefix("https://")


def test_build_request_without_key_sends_no_auth_header(kind: str) -> None:
    request = ADAPTERS[kind].build_request(REQ, model="m", base_url="http://localhost:1", api_key=None,
                                           headers={}, stream=False, max_tokens=None)
    assert not {"authorization", "x-api-key", "x-goog-api-key"} & set(request.headers.keys())


def test_parse_response_reads_text_finish_and_usage(kind: str) -> None:
    reply = ADAPTERS[kind].parse_response(_response(kind, json.dumps(OK_BODIES[kind]).encode()))
    assert (reply.text, reply.finish_reason, reply.input_tokens, reply.output_tokens) == ("Hi!", "stop", 11, 2)


def test_parse_response_estimates_missing_usage(kind: str) -> None:
    body = {k: v for k, v in OK_BODIES[kind].items() if k not in ("usage", "usageMetadata")}
    reply = ADAPTERS[kind].parse_response(_response(kind, json.dumps(body).encode()))
    assert reply.output_tokens == estimate_tokens("Hi!") == 1
    # the prompt's text, whatever shape the adapter gave it: a few tokens, never zero
    assert 5 <= reply.input_tokens <= 12


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"unexpected": true}', b'{"choices": "x"}'])
def test_parse_response_rejects_malformed_bodies(kind: str, body: bytes) -> None:
    with pytest.raises(ProviderResponseError):
        ADAPTERS[kind].parse_response(_response(kind, body))


def test_parse_stream_yields_text_then_a_final_chunk(kind: str) -> None:
    chunks = list(ADAPTERS[kind].parse_stream(iter(STREAMS[kind])))
    assert [c.text for c in chunks] == ["Hi", "!", ""]
    assert (chunks[-1].finish_reason, chunks[-1].input_tokens, chunks[-1].output_tokens) == ("stop", 11, 2)


def test_parse_stream_cut_before_the_end_is_unavailable(kind: str) -> None:
    lines = STREAMS[kind][:2]
    with pytest.raises(ProviderUnavailable):
        list(ADAPTERS[kind].parse_stream(iter(lines)))


def test_parse_stream_rejects_garbage_events(kind: str) -> None:
    with pytest.raises(ProviderResponseError):
        list(ADAPTERS[kind].parse_stream(iter(["data: {not json", ""])))


@pytest.mark.parametrize(("status", "headers", "cls", "retryable"), [
    (429, {"Retry-After": "2"}, RateLimited, True),
    (503, {}, ProviderUnavailable, True),
    (500, {}, ProviderUnavailable, True),
    (529, {}, ProviderUnavailable, True),
    (408, {}, ProviderTimeout, True),
    (401, {}, ProviderRejected, False),
    (404, {}, ProviderRejected, False),
    (422, {}, ProviderRejected, False),
])
def test_classify_error_by_status(kind: str, status: int, headers: Mapping[str, str], cls: type[ProviderError],
                                  retryable: bool) -> None:
    err = ADAPTERS[kind].classify_error(status, b'{"error": {"message": "nope"}}', headers)
    assert type(err) is cls and err.retryable is retryable and err.status_code == status
    assert "nope" in str(err)
    if cls is RateLimited:
        assert err.retry_after_s == 2.0


def test_classify_error_detects_context_length_in_every_providers_wording(kind: str) -> None:
    for body in CONTEXT_BODIES.values():
        err = ADAPTERS[kind].classify_error(400, json.dumps(body).encode(), {})
        assert isinstance(err, ContextLengthExceeded) and err.retryable


def test_gemini_reads_retry_delay_from_the_body() -> None:
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}]}}
    err = ADAPTERS["gemini"].classify_error(429, json.dumps(body).encode(), {})
    assert isinstance(err, RateLimited) and err.retry_after_s == 31.0


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    now = time.time()
    date = email.utils.formatdate(now + 60, usegmt=True)
    assert 58 <= (parse_retry_after({"Retry-After": date}, now=now) or 0) <= 61
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_sse_grouping_follows_the_spec() -> None:
    lines = [": comment", "event: a", "data: line one", "data: line two", "", "", "data:x", "id: 7", "", "data: tail"]
    events = [(e.event, e.data) for e in iter_sse(iter(lines))]
    assert events == [("a", "line one\nline two"), ("", "x"), ("", "tail")]


def test_error_message_is_short_and_prefers_the_providers_message() -> None:
    assert error_message(b'{"error": {"message": "bad  \\n thing"}}') == "bad thing"
    assert error_message(b'{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}') == "busy"
    long = error_message(b"x" * 1000)
    assert len(long) <= 303 and long.endswith("...")
    assert error_message(b"") == ""


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("a" * 400) == 100


def test_anthropic_moves_system_messages_and_needs_max_tokens() -> None:
    request = ADAPTERS["anthropic"].build_request(REQ, model="claude", base_url="https://api.anthropic.com",
                                                  api_key=KEY, headers={}, stream=True, max_tokens=None)
    body = json.loads(request.content)
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    assert body["system"] == "Be brief." and body["max_tokens"] == 1024 and body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert request.headers["anthropic-version"] and request.headers["x-api-key"] == KEY


def test_gemini_urls_and_roles() -> None:
    adapter = ADAPTERS["gemini"]
    plain = adapter.build_request(REQ, model="models/gemini-2.0-flash", base_url="https://g.example",
                                  api_key=KEY, headers={}, stream=False, max_tokens=10)
    streamed = adapter.build_request(REQ, model="gemini-2.0-flash", base_url="https://g.example/v1beta",
                                     api_key=KEY, headers={}, stream=True, max_tokens=10)
    assert str(plain.url) == "https://g.example/v1beta/models/gemini-2.0-flash:generateContent"
    assert str(streamed.url) == "https://g.example/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    body = json.loads(plain.content)
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert body["generationConfig"] == {"maxOutputTokens": 10, "temperature": 0.5}


def test_openai_streaming_asks_for_usage() -> None:
    request = ADAPTERS["openai"].build_request(REQ, model="gpt", base_url="https://api.openai.com/v1", api_key=KEY,
                                               headers={}, stream=True, max_tokens=None)
    body = json.loads(request.content)
    assert str(request.url) == "https://api.openai.com/v1/chat/completions"
    assert body["stream_options"] == {"include_usage": True} and "max_tokens" not in body
    assert request.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("openai", lambda b: b["top_p"] == 0.5 and b["stop"] == ["END"] and b["seed"] == 7),
        ("anthropic", lambda b: b["top_p"] == 0.5 and b["stop_sequences"] == ["END"]),
        ("gemini", lambda b: b["generationConfig"]["topP"] == 0.5 and b["generationConfig"]["stopSequences"] == ["END"]
         and b["generationConfig"]["seed"] == 7),
    ],
)
def test_sampling_parameters_reach_the_provider(kind, check):
    import json as _json

    from learned_router.providers import ADAPTERS
    from learned_router.types import ChatRequest as _Req

    req = _Req.coerce({"messages": [{"role": "user", "content": "hi"}],
                       "extra": {"top_p": 0.5, "stop": ["END"], "seed": 7}})
    built = ADAPTERS[kind].build_request(req, model="m", base_url="http://127.0.0.1:1", api_key=None, headers={},
                                         stream=False, max_tokens=16)
    assert check(_json.loads(built.content))
