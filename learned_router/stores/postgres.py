"""A decision log in PostgreSQL, so that several gateways and routers can share one log.

Same interface and semantics as :class:`~learned_router.stores.sqlite.SqliteDecisionLog` (the background
writer, back-pressure, retries, feedback and reads are the shared code of ``stores/_writer.py``); only the
connection, the schema and the batch commit differ. Each store instance has its own writer; records of all
instances land in the same tables, in commit order.

Tables (schema version 2, created when missing): ``decisions`` (indexed columns, the record as JSON text and
the embedding as float16 BYTEA; ``seq`` gives the append order), ``feedback`` (one row per feedback event,
the newest wins) and ``schema_info``. ``table_prefix`` puts several logs in one database.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from learned_router.stores._writer import COLUMNS, SqlDecisionLog
from learned_router.stores.records import DecisionRecord

__all__ = ["DB_SCHEMA_VERSION", "PostgresDecisionLog", "redact_url"]

DB_SCHEMA_VERSION = 2
_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS {p}schema_info (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS {p}decisions (
    seq BIGSERIAL NOT NULL, request_id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL DEFAULT 'decision', tenant TEXT, session_id TEXT, policy TEXT, experiment TEXT,
    variant TEXT, chosen_arm TEXT, served_arm TEXT, payload TEXT NOT NULL, embedding BYTEA);
CREATE INDEX IF NOT EXISTS {p}decisions_seq ON {p}decisions (seq);
CREATE INDEX IF NOT EXISTS {p}decisions_ts ON {p}decisions (ts);
CREATE INDEX IF NOT EXISTS {p}decisions_experiment ON {p}decisions (experiment, variant);
CREATE TABLE IF NOT EXISTS {p}feedback (
    id BIGSERIAL PRIMARY KEY, request_id TEXT NOT NULL, quality DOUBLE PRECISION NOT NULL, source TEXT,
    ts DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS {p}feedback_request ON {p}feedback (request_id)
"""


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
    except ValueError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


class PostgresDecisionLog(SqlDecisionLog):
    """A decision log in a PostgreSQL database with a background writer.

    Args:
        url: a libpq URL (``postgresql://user:password@host:5432/dbname``).
        table_prefix: prepended to every table and index name (letters, digits, underscores).
        queue_size: records that may wait for the writer before ``append`` blocks.
        batch_size: most records committed in one transaction.
        flush_interval_s: how long the writer waits for more records before committing a partial batch.
        on_error: called as ``on_error(exc, records)`` with records given up after ``max_retries``.
        max_retries: write attempts per batch before giving up (with backoff doubling from 50 ms to 2 s).
        connect_timeout_s: how long a connection attempt may take.
        store_prompts, store_embeddings: privacy settings used by ``append_decision``.

    Raises:
        ConnectionError: the database cannot be reached at open (the message names the URL, password
            redacted).
    """

    MARK = "%s"
    ORDER = "d.seq"

    def __init__(self, url: str, *, table_prefix: str = "", queue_size: int = 10_000, batch_size: int = 500,
                 flush_interval_s: float = 0.05, on_error: Callable[[BaseException, list[DecisionRecord]], None]
                 | None = None, max_retries: int = 8, connect_timeout_s: float = 10.0, store_prompts: bool = False,
                 store_embeddings: bool = True, now: Callable[[], float] = time.time) -> None:
        if table_prefix and not _PREFIX.match(table_prefix):
            raise ValueError(f"table_prefix must be letters, digits and underscores, got {table_prefix!r}")
        super().__init__(queue_size=queue_size, batch_size=batch_size, flush_interval_s=flush_interval_s,
                         on_error=on_error, max_retries=max_retries, store_prompts=store_prompts,
                         store_embeddings=store_embeddings, now=now)
        self.url = url
        self.table_prefix = table_prefix
        self.connect_timeout_s = float(connect_timeout_s)
        self._label = redact_url(url) + (f" (tables {table_prefix}*)" if table_prefix else "")
        self._decisions, self._feedback = f"{table_prefix}decisions", f"{table_prefix}feedback"
        self._insert = (f"INSERT INTO {self._decisions} ({', '.join(COLUMNS)}) "
                        f"VALUES ({', '.join('%s' for _ in COLUMNS)}) ON CONFLICT (request_id) DO UPDATE SET "
                        + ", ".join(f"{c} = EXCLUDED.{c}" for c in ("seq", *COLUMNS[1:])))
        try:
            init = self._connect()
        except psycopg.Error as exc:
            raise ConnectionError(f"cannot connect to the decision log at {redact_url(url)}: {exc}") from exc
        try:
            self._prepare(init)
        finally:
            init.close()
        self._start_writer(f"postgres:{table_prefix or 'decisions'}")

    # ------------------------------------------------------------------ connections and schema
    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, round(self.connect_timeout_s)))

    def _usable(self, conn: psycopg.Connection[Any]) -> bool:
        return not conn.closed and not conn.broken

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        # Several gateways may start at once: the advisory lock makes one of them create the tables.
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"learned-router:{self.table_prefix}",))
            for statement in _SCHEMA.format(p=self.table_prefix).split(";"):
                conn.execute(statement)
            version = conn.execute(f"SELECT MAX(version) FROM {self.table_prefix}schema_info").fetchone()[0]
            if version is None:
                conn.execute(f"INSERT INTO {self.table_prefix}schema_info (version) VALUES (%s)",
                             (DB_SCHEMA_VERSION,))
            elif version > DB_SCHEMA_VERSION:
                raise ValueError(f"{self._label} has decision-log schema {version}; this library reads up to "
                                 f"{DB_SCHEMA_VERSION}. Upgrade learned-router.")

    def _commit(self, conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(self._insert, rows)

    def _rows(self, sql: str, args: Sequence[Any], chunk_size: int = 5000) -> Iterator[tuple[Any, ...]]:
        # A server-side cursor: a large log is streamed, not loaded whole into memory.
        conn = psycopg.connect(self.url, connect_timeout=max(1, round(self.connect_timeout_s)))
        try:
            with conn.cursor(name="decision_log_read") as cur:
                cur.itersize = max(1, int(chunk_size))
                cur.execute(sql, args)
                yield from cur
        finally:
            conn.close()

    def schema_version(self) -> int:
        for row in self._rows(f"SELECT MAX(version) FROM {self.table_prefix}schema_info", ()):
            return int(row[0])
        raise RuntimeError("unreachable: an aggregate returns one row")

    def healthy(self) -> bool:
        """Whether the database answers (the gateway's health check calls this)."""
        conn = self._connect()
        try:
            return conn.execute("SELECT 1").fetchone() is not None
        finally:
            conn.close()

    def drop_tables(self) -> None:
        """Drop this log's tables (for tests and clean-ups; the data is gone)."""
        conn = self._connect()
        try:
            for table in ("feedback", "decisions", "schema_info"):
                conn.execute(f"DROP TABLE IF EXISTS {self.table_prefix}{table}")
        finally:
            conn.close()

    def __enter__(self) -> PostgresDecisionLog:
        return self
