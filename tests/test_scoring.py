"""Quality signals: heuristics on every answer, an LLM judge on a sample, user feedback; all logged with
their source and combined with the configured weights."""

from __future__ import annotations

import time

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from learned_router import ChatRequest, Router
from learned_router.scoring import HeuristicScorer, parse_grade
from learned_router.sim_fleet import SimFleet
from learned_router.simulator import SimProfile
from learned_router.stores import open_log_path
from learned_router.threaded_server import serve_in_thread

REQ = ChatRequest.coerce({"messages": [{"role": "user", "content": "List three primes as JSON."}]})


@pytest.mark.parametrize(
    ("text", "finish", "json_mode", "expected"),
    [
        ("", "stop", False, (0.0, "empty answer")),
        ("   \n", "stop", False, (0.0, "empty answer")),
        ("[2, 3, 5", "stop", True, (0.0, "invalid JSON although JSON was asked for")),
        ("[2, 3, 5]", "stop", True, None),
        ("The primes are 2, 3 and", "length", False, (0.3, "truncated at the token limit")),
        ("I'm sorry, but I can't help with that.", "stop", False, (0.1, "refusal")),
        ("As an AI language model, I cannot do that.", "stop", False, (0.1, "refusal")),
        ("2, 3 and 5.", "stop", False, None),
    ],
)
def test_heuristics(text, finish, json_mode, expected):
    req = ChatRequest.coerce({"messages": REQ.messages, "json_mode": json_mode})
    signal = HeuristicScorer().score(req, text, finish)
    assert (signal.quality, signal.reason) == expected if expected else signal is None


@pytest.mark.parametrize(("text", "q"), [("8", 7 / 9), ("Grade: 10", 1.0), ("1/10", 0.0), ("no idea", None)])
def test_parse_grade(text, q):
    assert parse_grade(text) == (pytest.approx(q) if q is not None else None)


def test_judge_grades_a_sample_and_every_signal_is_logged(tmp_path):
    graded: list[str] = []

    async def judge(request):
        body = await request.json()
        graded.append(body["messages"][0]["content"])
        return JSONResponse({"id": "j", "object": "chat.completion", "model": "judge", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "7"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 1, "total_tokens": 51}})

    app = Starlette(routes=[Route("/v1/chat/completions", judge, methods=["POST"])])
    with serve_in_thread(app) as judge_server, SimFleet([SimProfile("a")]) as fleet:
        cfg = {
            "providers": [
                fleet.provider_entry("a"),
                {"name": "judge", "kind": "openai", "base_url": f"{judge_server.url}/v1", "model": "judge",
                 "price_in_per_mtok": 1, "price_out_per_mtok": 1, "route": False},
            ],
            "scoring": {"judge": {"provider": "judge", "sample_rate": 0.5}},
            "log": {"path": str(tmp_path / "log.sqlite")},
        }
        router = Router.from_config(cfg, seed=3)
        assert router.route(REQ).ranking == ("a::sim-1",)  # the judge is never a routing target
        done = [router.complete({"messages": [{"role": "user", "content": f"Question {i}?"}]}) for i in range(20)]
        deadline = time.monotonic() + 10
        while len(graded) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        router.close()  # waits for the judge's pending grades
    assert 4 <= len(graded) <= 16  # about half of 20 sampled
    log = open_log_path(tmp_path / "log.sqlite")
    records = {r.request_id: r for r in log.scan()}
    log.close()
    judged = [r for r in records.values() if r.quality_source == "judge"]
    assert len(judged) == len(graded)
    assert all(r.quality == pytest.approx(6 / 9) for r in judged)
    assert set(records) == {c.request_id for c in done}
