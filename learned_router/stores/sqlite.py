"""The default decision log: SQLite in WAL mode, written by one background thread.

``append`` only puts the record on a bounded queue (a few microseconds on the caller's thread). The writer
thread takes records off the queue in batches and commits each batch in one transaction. When the queue is
full, ``append`` blocks until there is room (back-pressure) and logs a warning: a record is never dropped
silently. A failing write is logged and retried with backoff; after ``max_retries`` the batch is handed to
``on_error`` and counted in ``stats.failed``.

Durability: with ``synchronous=NORMAL`` (the default) a committed record survives a crash of the process;
``synchronous="FULL"`` also survives a power loss, at a higher commit cost. ``flush`` waits until everything
appended so far is committed; ``append_durable`` returns once its record is committed; ``close`` drains the
queue.

Tables (schema version 2): ``decisions`` (indexed columns plus the record as JSON and the embedding as a
float16 BLOB), ``feedback`` (one row per feedback event, the newest wins) and ``schema_info``.
Older files are migrated forward when opened (see ``MIGRATIONS``).
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from learned_router.stores._base import LogStats, RecordBuilder
from learned_router.stores.records import DecisionRecord
from learned_router.types import ChatRequest, Decision, Outcome

__all__ = ["DB_SCHEMA_VERSION", "MIGRATIONS", "LogWriteError", "SqliteDecisionLog"]

log = logging.getLogger(__name__)

DB_SCHEMA_VERSION = 2
_COLUMNS = ("request_id", "ts", "kind", "tenant", "session_id", "policy", "experiment", "variant", "chosen_arm",
            "served_arm", "payload", "embedding")
_INSERT = (f"INSERT OR REPLACE INTO decisions ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in _COLUMNS)})")
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS schema_info (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL DEFAULT 'decision', tenant TEXT,
    session_id TEXT, policy TEXT, experiment TEXT, variant TEXT, chosen_arm TEXT, served_arm TEXT,
    payload TEXT NOT NULL, embedding BLOB);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
CREATE INDEX IF NOT EXISTS decisions_experiment ON decisions (experiment, variant);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, quality REAL NOT NULL, source TEXT,
    ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
"""
_SELECT = """
SELECT d.payload, d.embedding, f.quality, f.source, f.ts FROM decisions d
LEFT JOIN feedback f ON f.id = (SELECT MAX(id) FROM feedback WHERE request_id = d.request_id)
"""


class LogWriteError(RuntimeError):
    """A record could not be committed after every retry."""


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create the current tables inside the caller's transaction (``executescript`` would commit it)."""
    for statement in _SCHEMA_V2.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Version 1 kept everything in ``decisions(request_id, ts, payload, quality, quality_source)``."""
    conn.execute("ALTER TABLE decisions RENAME TO decisions_v1")
    _create_schema(conn)
    rows = conn.execute("SELECT request_id, ts, payload, quality, quality_source FROM decisions_v1").fetchall()
    for request_id, ts, payload, quality, source in rows:
        data = json.loads(payload)
        data.setdefault("request_id", request_id)
        data.setdefault("ts", ts)
        rec = DecisionRecord.from_row(data)
        conn.execute(_INSERT, _to_db(rec))
        if quality is not None:
            conn.execute("INSERT INTO feedback (request_id, quality, source, ts) VALUES (?, ?, ?, ?)",
                         (request_id, float(quality), source or "user", ts))
    conn.execute("DROP TABLE decisions_v1")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1_to_2}
"""``MIGRATIONS[v]`` moves a database from schema version ``v`` to ``v + 1``."""


def _to_db(rec: DecisionRecord) -> tuple[Any, ...]:
    row = rec.to_row()
    emb = row.pop("embedding")
    for key in ("quality", "quality_source", "feedback_ts"):
        if row[key] is None:
            del row[key]
    return (rec.request_id, rec.ts, rec.kind, rec.tenant, rec.session_id, rec.policy, rec.experiment, rec.variant,
            rec.chosen_arm, rec.served_arm, json.dumps(row, separators=(",", ":")), emb)


def _from_db(payload: str, embedding: bytes | None, quality: float | None, source: str | None,
             fb_ts: float | None) -> DecisionRecord:
    data = json.loads(payload)
    data["embedding"] = embedding
    if quality is not None:
        data["quality"], data["quality_source"], data["feedback_ts"] = quality, source, fb_ts
    return DecisionRecord.from_row(data)


class SqliteDecisionLog:
    """A decision log in one SQLite file (WAL mode) with a background writer.

    Args:
        path: the database file (created with its parent folder when missing).
        queue_size: records that may wait for the writer before ``append`` blocks.
        batch_size: most records committed in one transaction.
        flush_interval_s: how long the writer waits for more records before committing a partial batch.
        on_error: called as ``on_error(exc, records)`` with records given up after ``max_retries``.
        max_retries: write attempts per batch before giving up (with backoff doubling from 50 ms to 2 s).
        synchronous: SQLite ``synchronous`` pragma: ``NORMAL`` (crash-safe) or ``FULL`` (power-loss-safe).
        store_prompts, store_embeddings: privacy settings used by ``append_decision``.
    """

    def __init__(self, path: str | Path, *, queue_size: int = 10_000, batch_size: int = 500,
                 flush_interval_s: float = 0.05, on_error: Callable[[BaseException, list[DecisionRecord]], None]
                 | None = None, max_retries: int = 8, synchronous: str = "NORMAL", store_prompts: bool = False,
                 store_embeddings: bool = True, now: Callable[[], float] = time.time) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch_size = max(1, int(batch_size))
        self.flush_interval_s = float(flush_interval_s)
        self.on_error = on_error
        self.max_retries = max(1, int(max_retries))
        self.synchronous = synchronous.upper()
        self.builder = RecordBuilder(store_prompts=store_prompts, store_embeddings=store_embeddings, now=now)
        self.stats = LogStats()
        self._queue: queue.Queue[tuple[int, DecisionRecord] | None] = queue.Queue(maxsize=max(1, int(queue_size)))
        self._put_lock = threading.Lock()
        self._done = threading.Condition()
        self._seq = 0
        self._done_seq = 0
        self._failed: set[int] = set()
        self._closed = False
        init = self._connect()
        try:
            self._prepare(init)
        finally:
            init.close()
        self._writer = threading.Thread(target=self._run, name=f"decision-log-writer:{self.path.name}", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ connections and schema
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            has_info = conn.execute("SELECT 1 FROM sqlite_master WHERE name='schema_info'").fetchone()
            version = conn.execute("SELECT MAX(version) FROM schema_info").fetchone()[0] if has_info else None
            if version is None:
                _create_schema(conn)
                conn.execute("DELETE FROM schema_info")
                conn.execute("INSERT INTO schema_info (version) VALUES (?)", (DB_SCHEMA_VERSION,))
            elif version > DB_SCHEMA_VERSION:
                raise ValueError(f"{self.path} has decision-log schema {version}; this library reads up to "
                                 f"{DB_SCHEMA_VERSION}. Upgrade learned-router.")
            else:
                while version < DB_SCHEMA_VERSION:
                    log.warning("migrating decision log %s from schema %d to %d", self.path, version, version + 1)
                    MIGRATIONS[version](conn)
                    version += 1
                    conn.execute("DELETE FROM schema_info")
                    conn.execute("INSERT INTO schema_info (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        conn = self._connect()
        try:
            return int(conn.execute("SELECT MAX(version) FROM schema_info").fetchone()[0])
        finally:
            conn.close()

    def journal_mode(self) -> str:
        conn = self._connect()
        try:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        finally:
            conn.close()

    # ------------------------------------------------------------------ writing
    def append(self, record: DecisionRecord) -> int:
        """Queue ``record`` for writing; returns its sequence number. Blocks (with a warning) when the queue
        is full. Raises RuntimeError after ``close``."""
        with self._put_lock:
            if self._closed:
                raise RuntimeError(f"the decision log {self.path} is closed")
            self._seq += 1
            seq = self._seq
            self.stats.appended += 1
            try:
                self._queue.put_nowait((seq, record))
            except queue.Full:
                self.stats.blocked += 1
                log.warning("decision log queue is full (%d records waiting for %s); the request path is "
                            "waiting for the writer", self._queue.maxsize, self.path)
                self._queue.put((seq, record))
        return seq

    def append_decision(self, decision: Decision, outcome: Outcome | None = None, *, features: Any = None,
                        request: ChatRequest | None = None, breaker_trips: Sequence[str] = ()) -> int:
        """Build a record from the router's objects (honouring the privacy settings) and append it."""
        return self.append(self.builder.decision_record(decision, outcome, features=features, request=request,
                                                        breaker_trips=breaker_trips))

    def append_refusal(self, request: ChatRequest, error: BaseException) -> int:
        """Log a request no arm could serve (every arm excluded)."""
        return self.append(self.builder.refusal_record(request, error))

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
                if not self._writer.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._done.wait(0.1 if remaining is None else min(remaining, 0.1))
        return True

    def _run(self) -> None:
        conn = self._connect()
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
                self._write(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[tuple[int, DecisionRecord]]) -> None:
        delay = 0.05
        error: BaseException | None = None
        for attempt in range(self.max_retries):
            try:
                rows = [_to_db(rec) for _, rec in batch]
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_INSERT, rows)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                error = None
                break
            except Exception as exc:  # every failure is reported and retried, then handed to on_error
                error = exc
                self.stats.retries += 1
                log.error("decision log %s: writing %d records failed (attempt %d of %d): %s", self.path,
                          len(batch), attempt + 1, self.max_retries, exc)
                if attempt + 1 < self.max_retries:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        if error is not None:
            log.error("decision log %s: gave up on %d records after %d attempts: %s", self.path, len(batch),
                      self.max_retries, error)
            if self.on_error is not None:
                try:
                    self.on_error(error, [rec for _, rec in batch])
                except Exception:
                    log.exception("decision log %s: the on_error callback failed", self.path)
        with self._done:
            if error is None:
                self.stats.written += len(batch)
            else:
                self.stats.failed += len(batch)
                self._failed.update(seq for seq, _ in batch)
            self._done_seq = batch[-1][0]
            self._done.notify_all()

    # ------------------------------------------------------------------ feedback
    def add_feedback(self, request_id: str, quality: float, source: str = "user", tenant: str | None = None,
                     *, ts: float | None = None) -> bool:
        """Attach a quality in [0, 1] to a logged request. Returns False when the request id is unknown or
        belongs to another tenant (when ``tenant`` is given). Waits for pending appends first."""
        if not 0.0 <= float(quality) <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        self.flush(timeout=10.0)
        conn = self._connect()
        try:
            row = conn.execute("SELECT tenant FROM decisions WHERE request_id = ?", (request_id,)).fetchone()
            if row is None or (tenant is not None and row[0] != tenant):
                return False
            conn.execute("INSERT INTO feedback (request_id, quality, source, ts) VALUES (?, ?, ?, ?)",
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
        where, args = [], []
        for clause, value in (("d.ts >= ?", since), ("d.ts < ?", until), ("d.experiment = ?", experiment),
                              ("d.tenant = ?", tenant)):
            if value is not None:
                where.append(clause)
                args.append(value)
        if kinds is not None:
            where.append(f"d.kind IN ({', '.join('?' for _ in kinds)})")
            args.extend(kinds)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY d.rowid"
        conn = self._connect()
        try:
            cur = conn.execute(sql, args)
            while True:
                rows = cur.fetchmany(chunk_size)
                if not rows:
                    return
                for row in rows:
                    yield _from_db(*row)
        finally:
            conn.close()

    def get(self, request_id: str) -> DecisionRecord | None:
        """One committed record with its newest feedback, or None."""
        conn = self._connect()
        try:
            row = conn.execute(_SELECT + " WHERE d.request_id = ?", (request_id,)).fetchone()
        finally:
            conn.close()
        return None if row is None else _from_db(*row)

    def count(self, *, kinds: Sequence[str] | None = None) -> int:
        """Committed records (all kinds unless ``kinds`` is given)."""
        conn = self._connect()
        try:
            if kinds is None:
                return int(conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
            marks = ", ".join("?" for _ in kinds)
            return int(conn.execute(f"SELECT COUNT(*) FROM decisions WHERE kind IN ({marks})", list(kinds))
                       .fetchone()[0])
        finally:
            conn.close()

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def stats_dict(self) -> dict[str, int]:
        self.stats.queue_depth = self._queue.qsize()
        return self.stats.as_dict()

    def export_parquet(self, path: str | Path, **filters: Any) -> Path:
        """Write the committed records (see :meth:`scan` for filters) to a parquet file."""
        from learned_router.stores.export import export_parquet

        return export_parquet(self.scan(**filters), path)

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout: float | None = 60.0) -> None:
        """Stop accepting records, write everything queued, stop the writer. Idempotent."""
        with self._put_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._writer.join(timeout)
        if self._writer.is_alive():
            log.error("decision log %s: the writer did not finish within %s s; %d records still queued",
                      self.path, timeout, self._queue.qsize())

    def __enter__(self) -> SqliteDecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
