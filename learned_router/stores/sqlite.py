"""The default decision log: SQLite in WAL mode, written by one background thread.

The writer, back-pressure, retries, feedback and reads are shared with the PostgreSQL store (see
``stores/_writer.py``).

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
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from learned_router.stores._writer import COLUMNS, LogWriteError, SqlDecisionLog, to_db
from learned_router.stores.records import DecisionRecord

__all__ = ["DB_SCHEMA_VERSION", "MIGRATIONS", "LogWriteError", "SqliteDecisionLog"]

log = logging.getLogger(__name__)

DB_SCHEMA_VERSION = 2
_INSERT = (f"INSERT OR REPLACE INTO decisions ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in COLUMNS)})")
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
        conn.execute(_INSERT, to_db(rec))
        if quality is not None:
            conn.execute("INSERT INTO feedback (request_id, quality, source, ts) VALUES (?, ?, ?, ?)",
                         (request_id, float(quality), source or "user", ts))
    conn.execute("DROP TABLE decisions_v1")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1_to_2}
"""``MIGRATIONS[v]`` moves a database from schema version ``v`` to ``v + 1``."""


class SqliteDecisionLog(SqlDecisionLog):
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
        super().__init__(queue_size=queue_size, batch_size=batch_size, flush_interval_s=flush_interval_s,
                         on_error=on_error, max_retries=max_retries, store_prompts=store_prompts,
                         store_embeddings=store_embeddings, now=now)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous.upper()
        self._label = str(self.path)
        init = self._connect()
        try:
            self._prepare(init)
        finally:
            init.close()
        self._start_writer(self.path.name)

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

    def _commit(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, rows)
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

    def __enter__(self) -> SqliteDecisionLog:
        return self
