"""What the SQL decision logs (SQLite, PostgreSQL) share: the background writer and the queries.

``append`` only puts the record on a bounded queue (a few microseconds on the caller's thread). The writer
thread takes records off the queue in batches and commits each batch in one transaction. When the queue is
full, ``append`` blocks until there is room (back-pressure) and logs a warning: a record is never dropped
silently. A failing write is logged and retried with backoff (on a fresh connection when the store says the
old one is unusable); after ``max_retries`` the batch is handed to ``on_error`` and counted in
``stats.failed``.

A subclass gives the connection (a DB-API connection in autocommit mode), the batch commit, the parameter
marker and the table names; the SQL of reads and feedback is the same for both databases.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from learned_router.stores._base import DecisionLogBase, LogStats, RecordBuilder
from learned_router.stores.records import DecisionRecord

__all__ = ["COLUMNS", "LogWriteError", "SqlDecisionLog", "from_db", "to_db"]

log = logging.getLogger(__name__)

COLUMNS = ("request_id", "ts", "kind", "tenant", "session_id", "policy", "experiment", "variant", "chosen_arm",
           "served_arm", "payload", "embedding")
"""The columns of the ``decisions`` table, in the order of :func:`to_db`."""


class LogWriteError(RuntimeError):
    """A record could not be committed after every retry."""


def to_db(rec: DecisionRecord) -> tuple[Any, ...]:
    """A record as the values of :data:`COLUMNS` (the record as JSON, the embedding as bytes)."""
    row = rec.to_row()
    emb = row.pop("embedding")
    for key in ("quality", "quality_source", "feedback_ts"):
        if row[key] is None:
            del row[key]
    return (rec.request_id, rec.ts, rec.kind, rec.tenant, rec.session_id, rec.policy, rec.experiment, rec.variant,
            rec.chosen_arm, rec.served_arm, json.dumps(row, separators=(",", ":")), emb)


def from_db(payload: str, embedding: bytes | None, quality: float | None, source: str | None,
            fb_ts: float | None) -> DecisionRecord:
    """The inverse of :func:`to_db`, joined with a feedback row (all None when there is none)."""
    data = json.loads(payload)
    data["embedding"] = None if embedding is None else bytes(embedding)
    if quality is not None:
        data["quality"], data["quality_source"], data["feedback_ts"] = quality, source, fb_ts
    return DecisionRecord.from_row(data)


class SqlDecisionLog(DecisionLogBase):
    """The shared part of a SQL decision log with a background writer.

    Subclasses set ``MARK`` (the DB-API parameter marker), ``ORDER`` (the append-order expression of the
    decisions table ``d``), ``self._label`` (the name used in messages), ``self._decisions`` and
    ``self._feedback`` (table names), implement ``_connect`` and ``_commit`` and call ``_start_writer`` once
    the tables exist.
    """

    MARK = "?"
    ORDER = "d.rowid"

    def __init__(self, *, queue_size: int, batch_size: int, flush_interval_s: float,
                 on_error: Callable[[BaseException, list[DecisionRecord]], None] | None, max_retries: int,
                 store_prompts: bool, store_embeddings: bool, now: Callable[[], float]) -> None:
        self.batch_size = max(1, int(batch_size))
        self.flush_interval_s = float(flush_interval_s)
        self.on_error = on_error
        self.max_retries = max(1, int(max_retries))
        self.builder = RecordBuilder(store_prompts=store_prompts, store_embeddings=store_embeddings, now=now)
        self.stats = LogStats()
        self._label = ""
        self._decisions, self._feedback = "decisions", "feedback"
        self._queue: queue.Queue[tuple[int, DecisionRecord] | None] = queue.Queue(maxsize=max(1, int(queue_size)))
        self._put_lock = threading.Lock()
        self._done = threading.Condition()
        self._seq = 0
        self._done_seq = 0
        self._failed: set[int] = set()
        self._closed = False
        self._writer: threading.Thread | None = None

    # ------------------------------------------------------------------ what a subclass provides
    @abstractmethod
    def _connect(self) -> Any:
        """A new database connection (the writer thread and each read open their own)."""

    @abstractmethod
    def _commit(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        """Write ``rows`` (values of :data:`COLUMNS`) in one transaction, replacing records with the same id."""

    def _usable(self, conn: Any) -> bool:
        """Whether the writer may keep ``conn`` after a failed write (False: it connects again)."""
        return True

    def _start_writer(self, name: str) -> None:
        self._writer = threading.Thread(target=self._run, name=f"decision-log-writer:{name}", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ writing
    def append(self, record: DecisionRecord) -> int:
        """Queue ``record`` for writing; returns its sequence number. Blocks (with a warning) when the queue
        is full. Raises RuntimeError after ``close``."""
        with self._put_lock:
            if self._closed:
                raise RuntimeError(f"the decision log {self._label} is closed")
            self._seq += 1
            seq = self._seq
            self.stats.appended += 1
            try:
                self._queue.put_nowait((seq, record))
            except queue.Full:
                self.stats.blocked += 1
                log.warning("decision log queue is full (%d records waiting for %s); the request path is "
                            "waiting for the writer", self._queue.maxsize, self._label)
                self._queue.put((seq, record))
        return seq

    def append_durable(self, record: DecisionRecord, timeout: float | None = 30.0) -> None:
        """Append and return once the record is committed.

        Raises:
            LogWriteError: the writer gave up on it, or it was not committed within ``timeout`` seconds.
        """
        seq = self.append(record)
        if not self._wait(seq, timeout):
            raise LogWriteError(f"record {record.request_id} not committed within {timeout} s")
        with self._done:
            if seq in self._failed:
                raise LogWriteError(f"record {record.request_id} could not be written (see the log)")

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every record appended so far is committed (or given up). Returns False on timeout or
        when a record since the last flush failed."""
        with self._put_lock:
            target = self._seq
        ok = self._wait(target, timeout)
        with self._done:
            failed = any(s <= target for s in self._failed)
            self._failed = {s for s in self._failed if s > target}
        return ok and not failed

    def _wait(self, seq: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            while self._done_seq < seq:
                if self._writer is None or not self._writer.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._done.wait(0.1 if remaining is None else min(remaining, 0.1))
        return True

    def _run(self) -> None:
        conn: Any = None
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                batch = [item]
                stop = False
                deadline = time.monotonic() + self.flush_interval_s
                while len(batch) < self.batch_size:
                    try:
                        nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic())) \
                            if not self._queue.qsize() else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                conn = self._write(conn, batch)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _write(self, conn: Any, batch: list[tuple[int, DecisionRecord]]) -> Any:
        """Commit ``batch`` with retries; returns the connection to keep (None: connect on the next batch)."""
        delay = 0.05
        error: BaseException | None = None
        for attempt in range(self.max_retries):
            try:
                rows = [to_db(rec) for _, rec in batch]
                if conn is None:
                    conn = self._connect()
                self._commit(conn, rows)
                error = None
                break
            except Exception as exc:  # every failure is reported and retried, then handed to on_error
                error = exc
                self.stats.retries += 1
                log.error("decision log %s: writing %d records failed (attempt %d of %d): %s", self._label,
                          len(batch), attempt + 1, self.max_retries, exc)
                if conn is not None and not self._usable(conn):
                    try:
                        conn.close()
                    finally:
                        conn = None
                if attempt + 1 < self.max_retries:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        if error is not None:
            log.error("decision log %s: gave up on %d records after %d attempts: %s", self._label, len(batch),
                      self.max_retries, error)
            if self.on_error is not None:
                try:
                    self.on_error(error, [rec for _, rec in batch])
                except Exception:
                    log.exception("decision log %s: the on_error callback failed", self._label)
        with self._done:
            if error is None:
                self.stats.written += len(batch)
            else:
                self.stats.failed += len(batch)
                self._failed.update(seq for seq, _ in batch)
            self._done_seq = batch[-1][0]
            self._done.notify_all()
        return conn

    # ------------------------------------------------------------------ queries
    def _rows(self, sql: str, args: Sequence[Any], chunk_size: int = 5000) -> Iterator[tuple[Any, ...]]:
        """The rows of a query on a fresh connection, fetched ``chunk_size`` at a time."""
        conn = self._connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, args)
            while True:
                rows = cur.fetchmany(chunk_size)
                if not rows:
                    return
                yield from rows
        finally:
            conn.close()

    def _select(self) -> str:
        return (f"SELECT d.payload, d.embedding, f.quality, f.source, f.ts FROM {self._decisions} d "
                f"LEFT JOIN {self._feedback} f ON f.id = "
                f"(SELECT MAX(id) FROM {self._feedback} WHERE request_id = d.request_id)")

    # ------------------------------------------------------------------ feedback
    def add_feedback(self, request_id: str, quality: float, source: str = "user", tenant: str | None = None,
                     *, ts: float | None = None) -> bool:
        """Attach a quality in [0, 1] to a logged request. Returns False when the request id is unknown or
        belongs to another tenant (when ``tenant`` is given). Waits for pending appends first."""
        if not 0.0 <= float(quality) <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        self.flush(timeout=10.0)
        m = self.MARK
        conn = self._connect()
        try:
            row = conn.execute(f"SELECT tenant FROM {self._decisions} WHERE request_id = {m}",
                               (request_id,)).fetchone()
            if row is None or (tenant is not None and row[0] != tenant):
                return False
            conn.execute(f"INSERT INTO {self._feedback} (request_id, quality, source, ts) VALUES ({m}, {m}, {m}, {m})",
                         (request_id, float(quality), source, self.builder.now() if ts is None else float(ts)))
            return True
        finally:
            conn.close()

    # ------------------------------------------------------------------ reading (committed data only)
    def scan(self, since: float | None = None, *, until: float | None = None, experiment: str | None = None,
             tenant: str | None = None, kinds: Sequence[str] | None = ("decision",),
             chunk_size: int = 5000) -> Iterator[DecisionRecord]:
        """Committed records in append order, each joined with its newest feedback.

        Args:
            since, until: Unix-seconds bounds on the decision time (``since`` inclusive, ``until`` exclusive).
            experiment, tenant: filters. kinds: record kinds to include (None: all, refusals too).
        """
        m = self.MARK
        where, args = [], []
        for clause, value in (("d.ts >=", since), ("d.ts <", until), ("d.experiment =", experiment),
                              ("d.tenant =", tenant)):
            if value is not None:
                where.append(f"{clause} {m}")
                args.append(value)
        if kinds is not None:
            where.append(f"d.kind IN ({', '.join(m for _ in kinds)})" if kinds else "FALSE")
            args.extend(kinds)
        sql = self._select() + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {self.ORDER}"
        for row in self._rows(sql, args, chunk_size):
            yield from_db(*row)

    def get(self, request_id: str) -> DecisionRecord | None:
        """One committed record with its newest feedback, or None."""
        for row in self._rows(self._select() + f" WHERE d.request_id = {self.MARK}", (request_id,)):
            return from_db(*row)
        return None

    def count(self, *, kinds: Sequence[str] | None = None) -> int:
        """Committed records (all kinds unless ``kinds`` is given)."""
        if kinds is None:
            sql, args = f"SELECT COUNT(*) FROM {self._decisions}", []
        else:
            marks = ", ".join(self.MARK for _ in kinds) if kinds else "NULL"
            sql, args = f"SELECT COUNT(*) FROM {self._decisions} WHERE kind IN ({marks})", list(kinds)
        return int(next(iter(self._rows(sql, args)))[0])

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def stats_dict(self) -> dict[str, int]:
        self.stats.queue_depth = self._queue.qsize()
        return self.stats.as_dict()

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout: float | None = 60.0) -> None:
        """Stop accepting records, write everything queued, stop the writer. Idempotent."""
        with self._put_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if self._writer is None:
            return
        self._writer.join(timeout)
        if self._writer.is_alive():
            log.error("decision log %s: the writer did not finish within %s s; %d records still queued",
                      self._label, timeout, self._queue.qsize())

    def __enter__(self) -> Any:
        return self

