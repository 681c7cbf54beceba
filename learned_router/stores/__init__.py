"""Decision logs: where the router records every request (the input of training, analytics and A/B reports).

``open_log(cfg.log)`` builds the configured store; ``open_log_path(path)`` opens an existing file or a
PostgreSQL log (a ``postgresql://`` URL); ``read_rows(path)`` yields plain row dicts (for analytics).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learned_router.stores._base import LogStats
from learned_router.stores.memory import MemoryDecisionLog
from learned_router.stores.records import SCHEMA_VERSION, DecisionRecord, decode_embedding, encode_embedding
from learned_router.stores.sqlite import LogWriteError, SqliteDecisionLog

if TYPE_CHECKING:
    from learned_router.stores.postgres import PostgresDecisionLog

__all__ = [
    "SCHEMA_VERSION",
    "DecisionRecord",
    "LogStats",
    "LogWriteError",
    "MemoryDecisionLog",
    "PostgresDecisionLog",
    "SqliteDecisionLog",
    "decode_embedding",
    "describe_log",
    "encode_embedding",
    "open_log",
    "open_log_path",
    "read_rows",
]


# A URL that went through ``pathlib.Path`` (a CLI option typed as a path) lost one slash of its "//".
_URL = re.compile(r"^(postgres|postgresql):/+", re.IGNORECASE)


def _log_url(path: object) -> str | None:
    """The PostgreSQL URL that ``path`` names (its "//" restored), or None for a file path."""
    text = str(path)
    return _URL.sub(lambda m: f"{m.group(1)}://", text, count=1) if _URL.match(text) else None


def describe_log(path: str | Path) -> str:
    """How to name a log in reports and manifests: the path, or the URL with its password redacted."""
    url = _log_url(path)
    if url is None:
        return str(path)
    from learned_router.stores.postgres import redact_url

    return redact_url(url)


def __getattr__(name: str) -> Any:
    # The PostgreSQL store imports psycopg; only users of that store pay for it.
    if name == "PostgresDecisionLog":
        from learned_router.stores.postgres import PostgresDecisionLog

        return PostgresDecisionLog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_log(cfg: Any) -> SqliteDecisionLog | MemoryDecisionLog | PostgresDecisionLog:
    """The store for a ``LogConfig``: PostgreSQL when ``cfg.path`` is a ``postgresql://`` URL, else SQLite at
    ``cfg.path`` (``:memory:`` gives a MemoryDecisionLog)."""
    if cfg.path in (None, "", ":memory:"):
        return MemoryDecisionLog(store_prompts=cfg.store_prompts, store_embeddings=cfg.store_embeddings)
    url = _log_url(cfg.path)
    if url is not None:
        from learned_router.stores.postgres import PostgresDecisionLog

        return PostgresDecisionLog(url, queue_size=cfg.queue_size, store_prompts=cfg.store_prompts,
                                   store_embeddings=cfg.store_embeddings)
    return SqliteDecisionLog(cfg.path, queue_size=cfg.queue_size, store_prompts=cfg.store_prompts,
                             store_embeddings=cfg.store_embeddings)


def open_log_path(path: str | Path) -> SqliteDecisionLog | PostgresDecisionLog:
    """Open an existing SQLite decision log, or a PostgreSQL one given as a ``postgresql://`` URL (for
    reading: reports, training).

    Raises:
        FileNotFoundError: no file at ``path``.
        ConnectionError: the PostgreSQL database cannot be reached.
    """
    url = _log_url(path)
    if url is not None:
        from learned_router.stores.postgres import PostgresDecisionLog

        return PostgresDecisionLog(url)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no decision log at {p}")
    return SqliteDecisionLog(p)


def read_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every decision of the log at ``path`` as a plain dict (``DecisionRecord.to_row``). The log is opened
    now, so a missing file or an unreachable database raises here rather than on the first row."""
    return _rows(open_log_path(path))


def _rows(store: SqliteDecisionLog | PostgresDecisionLog) -> Iterator[dict[str, Any]]:
    try:
        for rec in store.scan():
            yield rec.to_row()
    finally:
        store.close()
