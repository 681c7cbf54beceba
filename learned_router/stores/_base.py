"""What every decision log shares: building records from the router's objects, and the stats counters."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learned_router.stores.records import DecisionRecord
from learned_router.types import ChatRequest, Decision, Outcome

__all__ = ["DecisionLogBase", "LogStats", "RecordBuilder"]


@dataclass(slots=True)
class LogStats:
    """Counters of a decision log.

    Attributes:
        appended: records accepted by ``append``.
        written: records committed to storage.
        failed: records the writer gave up on after its retries (each one also reported via ``on_error``).
        retries: failed write attempts that were retried.
        blocked: appends that found the queue full and waited (back-pressure).
        queue_depth: records waiting to be written right now.
    """

    appended: int = 0
    written: int = 0
    failed: int = 0
    retries: int = 0
    blocked: int = 0
    queue_depth: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"appended": self.appended, "written": self.written, "failed": self.failed,
                "retries": self.retries, "blocked": self.blocked, "queue_depth": self.queue_depth}


class RecordBuilder:
    """Turns the router's Decision/Outcome/request into DecisionRecords, honouring the privacy settings.

    Args:
        store_prompts: keep the prompt text in the record (off by default).
        store_embeddings: keep the float16 embedding (on by default; training needs it).
        now: the wall clock, Unix seconds.
    """

    def __init__(self, *, store_prompts: bool = False, store_embeddings: bool = True,
                 now: Callable[[], float] = time.time) -> None:
        self.store_prompts = store_prompts
        self.store_embeddings = store_embeddings
        self.now = now

    def decision_record(self, decision: Decision, outcome: Outcome | None, *, features: Any = None,
                        request: ChatRequest | None = None, breaker_trips: Sequence[str] = ()) -> DecisionRecord:
        embedding = getattr(features, "embedding", None) if self.store_embeddings else None
        prompt = request.prompt_text() if (self.store_prompts and request is not None) else None
        return DecisionRecord.from_decision(
            decision, outcome, embedding=embedding, prompt=prompt,
            tenant=request.tenant if request is not None else None,
            session_id=request.session_id if request is not None else None, ts=self.now(),
            breaker_trips=breaker_trips, task_label=request.task_hint if request is not None else None,
            embedder=getattr(features, "embedder", None),
        )

    def refusal_record(self, request: ChatRequest, error: BaseException) -> DecisionRecord:
        reasons = getattr(error, "reasons", None)
        return DecisionRecord(
            request_id=request.request_id, ts=self.now(), kind="refusal", tenant=request.tenant,
            session_id=request.session_id, error_kind=type(error).__name__,
            excluded={str(k): str(v) for k, v in reasons.items()} if isinstance(reasons, dict) else {},
            prompt=request.prompt_text() if self.store_prompts else None,
        )


class DecisionLogBase(ABC):
    """The methods every store builds on its own ``append``, ``scan`` and ``close``."""

    builder: RecordBuilder

    @abstractmethod
    def append(self, record: DecisionRecord) -> int:
        """Queue (or store) one record; returns its sequence number."""

    @abstractmethod
    def scan(self, since: float | None = None, **filters: Any) -> Iterator[DecisionRecord]:
        """The records, oldest first, with their newest feedback joined."""

    @abstractmethod
    def close(self, timeout: float | None = None) -> None:
        """Drain what is queued and release the store."""

    def append_decision(self, decision: Decision, outcome: Outcome | None = None, *, features: Any = None,
                        request: ChatRequest | None = None, breaker_trips: Sequence[str] = ()) -> int:
        """Build a record from the router's objects (honouring the privacy settings) and append it."""
        return self.append(self.builder.decision_record(decision, outcome, features=features, request=request,
                                                        breaker_trips=breaker_trips))

    def append_refusal(self, request: ChatRequest, error: BaseException) -> int:
        """Log a request no arm could serve (every arm excluded)."""
        return self.append(self.builder.refusal_record(request, error))

    def export_parquet(self, path: str | Path, **filters: Any) -> Path:
        """Write the committed records (see ``scan`` for filters) to a parquet file."""
        from learned_router.stores.export import export_parquet

        return export_parquet(self.scan(**filters), path)

    def __exit__(self, *exc: object) -> None:
        self.close()
