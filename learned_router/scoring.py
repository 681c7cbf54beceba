"""Automatic quality signals: cheap heuristics on every answer, and an LLM judge on a sample of answers.

Each signal carries its source (``heuristic``, ``judge``; users give ``user`` through ``feedback``); the
router logs every signal and credits the policy with each one weighted by ``scoring.weights``, so the reward
the policy learns is the configured weighted mean of the signals a request received.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from learned_router.errors import ProviderError
from learned_router.types import ChatRequest

__all__ = ["HeuristicScorer", "JudgeScorer", "Signal", "parse_grade"]

log = logging.getLogger(__name__)

_REFUSALS = re.compile(
    r"\b(i\s*(?:can(?:no|')t|am\s+(?:not\s+able|unable)|won't)\s+(?:help|assist|do|provide|comply)"
    r"|as an ai (?:language )?model|i'm sorry, but i)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Signal:
    quality: float
    source: str
    reason: str


class HeuristicScorer:
    """Detects answers that are certainly poor. Returns None when it finds nothing wrong (no signal: the
    absence of a visible defect says little about quality)."""

    source = "heuristic"

    def score(self, request: ChatRequest, text: str, finish_reason: str | None) -> Signal | None:
        stripped = text.strip()
        if not stripped:
            return Signal(0.0, self.source, "empty answer")
        if request.json_mode:
            try:
                json.loads(stripped)
            except ValueError:
                return Signal(0.0, self.source, "invalid JSON although JSON was asked for")
        if finish_reason == "length":
            return Signal(0.3, self.source, "truncated at the token limit")
        if _REFUSALS.search(stripped[:400]):
            return Signal(0.1, self.source, "refusal")
        return None


JUDGE_PROMPT = """You grade answers of an AI assistant. Read the conversation and the answer, then rate how
well the answer serves the user (correctness, completeness, clarity) on a scale from 1 (useless) to 10
(excellent). Reply with the number only.

Conversation:
{conversation}

Answer:
{answer}

Grade (1-10):"""


def parse_grade(text: str) -> float | None:
    """The first number 1-10 in ``text`` as a quality in [0, 1] ((n-1)/9), or None."""
    m = re.search(r"\b(10|[1-9])(?:\.\d+)?\b", text)
    if m is None:
        return None
    return (float(m.group(0)) - 1.0) / 9.0


class JudgeScorer:
    """Grades a random ``sample_rate`` share of answers with a judge provider, off the request path
    (a small thread pool); each grade is handed to ``on_signal(request_id, Signal)``.

    Args:
        client: a ProviderClient for the judge model.
        sample_rate: share of answers graded.
        rng: a seeded generator for the sampling.
    """

    source = "judge"

    def __init__(self, client: Any, *, sample_rate: float, rng: np.random.Generator, timeout_s: float = 30.0,
                 max_workers: int = 2) -> None:
        self.client = client
        self.sample_rate = sample_rate
        self.rng = rng
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="learned-router-judge")

    def maybe_grade(self, request: ChatRequest, text: str,
                    on_signal: Callable[[str, Signal], None]) -> Future[Signal | None] | None:
        if self.sample_rate <= 0 or self.rng.random() >= self.sample_rate:
            return None
        return self._pool.submit(self._grade, request, text, on_signal)

    def _grade(self, request: ChatRequest, text: str, on_signal: Callable[[str, Signal], None]) -> Signal | None:
        conversation = "\n".join(f"{m.get('role')}: {m.get('content')}" for m in request.messages)
        judge_req = ChatRequest.coerce({"messages": [{"role": "user", "content": JUDGE_PROMPT.format(
            conversation=conversation[-6000:], answer=text[-4000:])}], "max_tokens": 8, "temperature": 0.0})
        try:
            reply = self.client.complete(judge_req, timeout_s=self.timeout_s)
        except ProviderError as err:
            log.warning("judge call failed for %s: %s", request.request_id, err.kind)
            return None
        grade = parse_grade(reply.text)
        if grade is None:
            log.warning("judge gave no grade for %s", request.request_id)
            return None
        signal = Signal(grade, self.source, "judge grade")
        on_signal(request.request_id, signal)
        return signal

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
