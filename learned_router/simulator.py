"""Simulated LLM providers: real HTTP servers on loopback that speak the OpenAI chat-completions, Anthropic
Messages and Gemini generateContent wire formats, with controllable latency, quality and failures.

Used by ``learned-router demo``, by the gateway tests and by the router's end-to-end tests::

    profile = SimProfile("cheap", quality={"code": 0.55, "chat": 0.8}, latency_s=0.05)
    with serve_in_thread(create_sim_app(profile)) as server:   # learned_router.threaded_server
        ...  # an OpenAI-compatible provider at f"{server.url}/v1"
        profile.set_mode("error500")  # every following call fails with HTTP 500

Answers are deterministic per (profile, prompt). Each response carries the answer's "true" quality in
``x-sim-quality`` (and the guessed task in ``x-sim-task``) so a demo judge can score it: read it with an
httpx ``event_hooks={"response": [...]}`` hook on the injected client, or ask ``profile.true_quality(text)``
for the same number. ``mode`` switches
the failure at run time: ``ok``, ``error500``, ``timeout`` (no answer until the client gives up),
``rate_limit`` (429 with ``Retry-After: 1``), ``reset`` (the connection is dropped with a TCP reset),
``malformed`` (an invalid JSON body), ``context_length`` (400 context-length error in the API's own shape),
``stream_cut`` (a few chunks, then the connection drops).

Several profiles at once: :class:`learned_router.sim_fleet.SimFleet`. Starlette is imported inside
:func:`create_sim_app`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import struct
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from learned_router.providers._server_wire import WIRES, Wire

__all__ = [
    "MODES",
    "SimAnswer",
    "SimProfile",
    "create_sim_app",
    "guess_task",
]

MODES = ("ok", "error500", "timeout", "rate_limit", "reset", "malformed", "context_length", "stream_cut")

# Checked in order; the first task with a keyword in the (lower-cased) prompt wins, else "chat".
TASK_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("code", ("python", "code", "function", "bug", "compile", "sql", "javascript", "regex", "implement",
              "def ", "class ", "algorithm", "stack trace")),
    ("translation", ("translate", "translation", "in french", "in spanish", "in german", "into english")),
    ("summarization", ("summarize", "summarise", "summary", "tl;dr", "tldr")),
    ("math", ("calculate", "solve", "equation", "integral", "derivative", "probability", "how many", "percent",
              "math", "sum of", "product of")),
    ("creative_writing", ("poem", "story", "haiku", "lyrics", "limerick", "fiction")),
    ("classification", ("classify", "categorize", "categorise", "sentiment", "which category")),
    ("information_extraction", ("extract", "find all the", "list the names")),
    ("brainstorming", ("brainstorm", "ideas for", "suggest some", "come up with")),
    ("reasoning", ("puzzle", "logic", "step by step", "riddle", "deduce", "if all")),
    ("knowledge_qa", ("what is", "who is", "who was", "when did", "where is", "capital of", "explain")),
)

_WORDS = ("the", "model", "answer", "is", "based", "on", "careful", "analysis", "of", "your", "question", "and",
          "we", "find", "that", "result", "holds", "because", "each", "step", "follows", "from", "previous",
          "one", "so", "final", "value", "clear", "given", "data", "this", "approach", "works", "well")


def guess_task(text: str) -> str:
    """A keyword guess of the task of ``text`` (one of the classifier's task names, default ``chat``)."""
    low = text.lower()
    for task, words in TASK_KEYWORDS:
        if any(w in low for w in words):
            return task
    return "chat"


def _unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from strings."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class SimAnswer:
    """Everything a handler needs for one request, decided at once under the profile's lock."""

    mode: str
    text: str
    task: str
    quality: float
    input_tokens: int
    output_tokens: int
    finish_reason: str  # "stop" or "length"
    ttft_s: float
    per_token_s: float
    hang_s: float
    retry_after_s: int
    cut_after_chunks: int
    usage: bool
    max_context_tokens: int


@dataclass(eq=False)
class SimProfile:
    """One simulated provider. Change it at run time through its methods (thread-safe).

    Attributes:
        name: provider name (also in the answer and the ``x-sim-provider`` header).
        model: the model name it reports.
        latency_s: base latency (time to first token), seconds.
        per_token_s: extra seconds per output token.
        jitter_s: extra latency drawn uniformly from [0, jitter_s] by a generator seeded with ``seed``.
        quality: task → mean quality in [0, 1]; tasks not listed get ``default_quality``.
        quality_noise: per-prompt spread around the mean (deterministic per profile and prompt).
        mode: one of ``MODES``.
        min_words, max_words: answer length range (deterministic per prompt).
        usage: whether responses report token usage (False exercises the clients' estimates).
        max_context_tokens: prompts estimated above this get a context-length error even in mode ``ok``.
        hang_s: how long ``timeout`` mode holds a request (it ends early when the client goes away).
        cut_after_chunks: how many chunks ``stream_cut`` sends before dropping the connection.
        price_in_per_mtok, price_out_per_mtok: list prices, used only by ``SimFleet.provider_entry``.
    """

    name: str
    model: str = "sim-1"
    latency_s: float = 0.02
    per_token_s: float = 0.0
    jitter_s: float = 0.0
    quality: Mapping[str, float] = field(default_factory=dict)
    default_quality: float = 0.7
    quality_noise: float = 0.1
    mode: str = "ok"
    min_words: int = 8
    max_words: int = 40
    usage: bool = True
    max_context_tokens: int = 128_000
    hang_s: float = 30.0
    retry_after_s: int = 1
    cut_after_chunks: int = 2
    seed: int = 0
    price_in_per_mtok: float = 1.0
    price_out_per_mtok: float = 2.0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False)
    _calls: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        self.quality = dict(self.quality)
        self._rng = random.Random(self.seed)

    # -- run-time control ---------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """Switch the behaviour of every following request (see ``MODES``)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        with self._lock:
            self.mode = mode

    def set_latency(self, latency_s: float | None = None, *, per_token_s: float | None = None,
                    jitter_s: float | None = None) -> None:
        with self._lock:
            self.latency_s = self.latency_s if latency_s is None else latency_s
            self.per_token_s = self.per_token_s if per_token_s is None else per_token_s
            self.jitter_s = self.jitter_s if jitter_s is None else jitter_s

    def set_quality(self, task: str | None, quality: float) -> None:
        """Set the mean quality of one task, or of every unlisted task when ``task`` is None."""
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        with self._lock:
            if task is None:
                self.default_quality = quality
            else:
                self.quality = {**self.quality, task: quality}

    def set_usage(self, report: bool) -> None:
        with self._lock:
            self.usage = report

    @property
    def calls(self) -> int:
        """How many API requests this profile has received."""
        with self._lock:
            return self._calls

    def true_quality(self, user_text: str) -> float:
        """The quality of this profile's answer to a request whose last user message is ``user_text`` (what
        ``x-sim-quality`` reports). Quality depends on that text only, not on system prompts."""
        with self._lock:
            return self._quality(user_text, guess_task(user_text))

    # -- answering ----------------------------------------------------------------------------------------
    def _quality(self, prompt: str, task: str) -> float:
        mean = self.quality.get(task, self.default_quality)
        difficulty = _unit("difficulty", prompt) - 0.5  # shared by every profile: hard prompts are hard
        noise = (_unit("noise", self.name, prompt) - 0.5) * 2 * self.quality_noise
        return round(min(1.0, max(0.0, mean - 0.3 * difficulty + noise)), 4)

    def answer(self, prompt: str, task_text: str, max_tokens: int | None, json_mode: bool) -> SimAnswer:
        """Decide the answer to one request (and count the call).

        Args:
            prompt: every message's text (decides the answer text and the input tokens).
            task_text: the last user message (decides the task and the quality).
            max_tokens: the request's cap; a longer answer is cut and finishes with ``length``.
            json_mode: answer with a JSON object.
        """
        task = guess_task(task_text)
        n_words = self.min_words + int(_unit("len", self.name, prompt) * (self.max_words - self.min_words + 1))
        words = [_WORDS[int(_unit("w", self.name, prompt, str(i)) * len(_WORDS))] for i in range(n_words)]
        text = f"{self.name} says: " + " ".join(words) + "."
        if json_mode:
            text = json.dumps({"provider": self.name, "answer": " ".join(words)})
        finish = "stop"
        if max_tokens is not None and len(text) // 4 > max_tokens:
            text, finish = text[: max_tokens * 4], "length"
        with self._lock:
            self._calls += 1
            jitter = self._rng.uniform(0.0, self.jitter_s) if self.jitter_s > 0 else 0.0
            return SimAnswer(
                mode=self.mode, text=text, task=task, quality=self._quality(task_text, task),
                input_tokens=max(1, len(prompt) // 4), output_tokens=max(1, len(text) // 4), finish_reason=finish,
                ttft_s=self.latency_s + jitter, per_token_s=self.per_token_s, hang_s=self.hang_s,
                retry_after_s=self.retry_after_s, cut_after_chunks=self.cut_after_chunks, usage=self.usage,
                max_context_tokens=self.max_context_tokens,
            )


# -- the ASGI app ---------------------------------------------------------------------------------------------
async def _drop_connection(scope: Mapping[str, Any], send: Any, head: Sequence[bytes] = (), *,
                           content_type: bytes = b"text/event-stream", reset: bool = False) -> None:
    """Send ``head`` (response pieces, possibly none) then end the TCP connection: with a reset (RST) when
    ``reset``, else with a plain close after the head was flushed (the client sees a truncated body).

    uvicorn's protocol objects hold the transport; the outermost wrapper puts it in the scope. Without it
    (another server), the response is left incomplete, which the client also sees as a broken connection.
    """
    if head:
        headers = [(b"content-type", content_type)]
        if content_type != b"text/event-stream":  # a plain body: promise more than is sent
            headers.append((b"content-length", str(sum(map(len, head)) + 100).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in head:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    transport = scope.get("sim.transport")
    cycle = scope.get("sim.cycle")
    if transport is None:
        if not head:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
            await send({"type": "http.response.body", "body": b'{"choices": [', "more_body": True})
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()  # flushes what was written, then FIN
    for _ in range(200):  # until uvicorn notices, so it does not try to answer on a dead connection
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.001)


def create_sim_app(profile: SimProfile) -> Any:
    """An ASGI app simulating ``profile`` on the OpenAI, Anthropic and Gemini routes.

    Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /v1/messages``,
    ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``, ``GET /health``.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    class _Raw(Response):
        """A response written by hand: a streamed answer, a drop, or a hang."""

        def __init__(self, writer: Any) -> None:
            super().__init__()
            self.writer = writer

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.writer(scope, receive, send)

    async def handle(request: Request, dialect: Wire, stream: bool | None = None) -> Response:
        try:
            body = await request.json()
            parsed = dialect.parse(body, request.path_params)
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse(dialect.error_body(400, f"bad request: {exc}"), status_code=400)
        if stream is not None:
            parsed = replace(parsed, stream=stream)
        ans = profile.answer(parsed.prompt, parsed.last_user, parsed.max_tokens, parsed.json_mode)
        headers = {"x-sim-quality": f"{ans.quality:.4f}", "x-sim-task": ans.task, "x-sim-provider": profile.name,
                   "x-request-id": uuid.uuid4().hex}
        if ans.mode == "timeout":
            deadline = time.monotonic() + ans.hang_s
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return JSONResponse(dialect.error_body(504, "simulated timeout"), status_code=504, headers=headers)
        if ans.mode == "reset":
            return _Raw(lambda scope, receive, send: _drop_connection(scope, send, reset=True))
        if ans.mode == "error500":
            return JSONResponse(dialect.error_body(500, "simulated server error"), status_code=500,
                                headers=headers)
        if ans.mode == "rate_limit":
            return JSONResponse(dialect.error_body(429, "simulated rate limit"), status_code=429,
                                headers={**headers, "retry-after": str(ans.retry_after_s)})
        if ans.mode == "context_length" or ans.input_tokens > ans.max_context_tokens:
            return JSONResponse(dialect.context_error(ans.input_tokens, ans.max_context_tokens), status_code=400,
                                headers=headers)
        if ans.mode == "malformed":
            bad = b'data: {"choices": [\n\n' if parsed.stream else b'{"choices": [{"message": '
            return Response(bad, headers=headers,
                            media_type="text/event-stream" if parsed.stream else "application/json")
        await asyncio.sleep(ans.ttft_s)
        if not parsed.stream and ans.mode == "stream_cut":
            whole = json.dumps(dialect.ok_body(parsed, ans)).encode()
            return _Raw(lambda scope, receive, send: _drop_connection(
                scope, send, [whole[: len(whole) // 2]], content_type=b"application/json"))
        if not parsed.stream:
            await asyncio.sleep(ans.per_token_s * ans.output_tokens)
            return JSONResponse(dialect.ok_body(parsed, ans), headers=headers)
        head, body_events, tail = dialect.stream_events(parsed, ans)
        if ans.mode == "stream_cut":
            cut = head + body_events[: ans.cut_after_chunks]
            return _Raw(lambda scope, receive, send: _drop_connection(scope, send, cut))
        return _Raw(lambda scope, receive, send: _stream(send, head + body_events + tail, ans, headers))

    async def _stream(send: Any, events: list[bytes], ans: SimAnswer, headers: Mapping[str, str]) -> None:
        raw_headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        per_event = ans.per_token_s * ans.output_tokens / max(1, len(events))
        for piece in events:
            if per_event:
                await asyncio.sleep(per_event)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def openai(request: Request) -> Response:
        return await handle(request, WIRES["openai"])

    async def anthropic(request: Request) -> Response:
        return await handle(request, WIRES["anthropic"])

    async def gemini(request: Request) -> Response:
        target = request.path_params["target"]
        _, _, method = target.rpartition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return JSONResponse(WIRES["gemini"].error_body(404, f"unknown method {method!r}"), status_code=404)
        return await handle(request, WIRES["gemini"], stream=method == "streamGenerateContent")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": profile.model, "object": "model",
                                                         "owned_by": profile.name}]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "provider": profile.name, "mode": profile.mode})

    app = Starlette(routes=[
        Route("/v1/chat/completions", openai, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/messages", anthropic, methods=["POST"]),
        Route("/v1beta/models/{target}", gemini, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        cycle = getattr(send, "__self__", None)  # uvicorn's RequestResponseCycle; holds the transport
        if scope["type"] == "http" and cycle is not None:
            scope = {**scope, "sim.transport": getattr(cycle, "transport", None), "sim.cycle": cycle}
        await app(scope, receive, send)

    outer.profile = profile  # type: ignore[attr-defined]
    return outer
