"""An in-memory decision log with the interface of :class:`SqliteDecisionLog`, for tests and notebooks.

Writes are synchronous (``append`` stores the record at once), so ``flush`` has nothing to wait for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from learned_router.stores._base import DecisionLogBase, LogStats, RecordBuilder
from learned_router.stores.records import DecisionRecord

__all__ = ["MemoryDecisionLog"]


class MemoryDecisionLog(DecisionLogBase):
    """Records in a dict, in append order; feedback kept beside them (the newest wins).

    Args:
        records: records to start with.
        store_prompts, store_embeddings: privacy settings used by ``append_decision``.
    """

    def __init__(self, records: Iterable[DecisionRecord] = (), *, store_prompts: bool = False,
                 store_embeddings: bool = True, now: Callable[[], float] = time.time) -> None:
        self.builder = RecordBuilder(store_prompts=store_prompts, store_embeddings=store_embeddings, now=now)
        self.stats = LogStats()
        self._records: dict[str, DecisionRecord] = {}
        self._feedback: dict[str, tuple[float, str, float]] = {}
        self._lock = threading.Lock()
        self._closed = False
        for rec in records:
            self.append(rec)

    def append(self, record: DecisionRecord) -> int:
        with self._lock:
            if self._closed:
                raise RuntimeError("the decision log is closed")
            self._records.pop(record.request_id, None)
            self._records[record.request_id] = record
            self.stats.appended += 1
            self.stats.written += 1
            return self.stats.appended

    def append_durable(self, record: DecisionRecord, timeout: float | None = None) -> None:
        self.append(record)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def add_feedback(self, request_id: str, quality: float, source: str = "user", tenant: str | None = None,
                     *, ts: float | None = None) -> bool:
        if not 0.0 <= float(quality) <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        with self._lock:
            rec = self._records.get(request_id)
            if rec is None or (tenant is not None and rec.tenant != tenant):
                return False
            self._feedback[request_id] = (float(quality), source, self.builder.now() if ts is None else float(ts))
            return True

    def _joined(self, rec: DecisionRecord) -> DecisionRecord:
        fb = self._feedback.get(rec.request_id)
        return rec if fb is None else rec.with_feedback(*fb)

    def scan(self, since: float | None = None, *, until: float | None = None, experiment: str | None = None,
             tenant: str | None = None, kinds: Sequence[str] | None = ("decision",),
             chunk_size: int = 5000) -> Iterator[DecisionRecord]:
        with self._lock:
            records = list(self._records.values())
        for rec in records:
            if (since is not None and rec.ts < since) or (until is not None and rec.ts >= until):
                continue
            if (experiment is not None and rec.experiment != experiment) or \
                    (tenant is not None and rec.tenant != tenant):
                continue
            if kinds is not None and rec.kind not in kinds:
                continue
            yield self._joined(rec)

    def get(self, request_id: str) -> DecisionRecord | None:
        with self._lock:
            rec = self._records.get(request_id)
        return None if rec is None else self._joined(rec)

    def count(self, *, kinds: Sequence[str] | None = None) -> int:
        with self._lock:
            return sum(1 for r in self._records.values() if kinds is None or r.kind in kinds)

    def queue_depth(self) -> int:
        return 0

    def stats_dict(self) -> dict[str, int]:
        return self.stats.as_dict()

    def close(self, timeout: float | None = None) -> None:
        self._closed = True

    def __enter__(self) -> MemoryDecisionLog:
        return self

