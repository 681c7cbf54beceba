"""Decision logs: where the router records every request (the input of training, analytics and A/B reports).

``open_log(cfg.log)`` builds the configured store; ``open_log_path(path)`` opens an existing file;
``read_rows(path)`` yields plain row dicts (for analytics).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from learned_router.stores._base import LogStats
from learned_router.stores.memory import MemoryDecisionLog
from learned_router.stores.records import SCHEMA_VERSION, DecisionRecord, decode_embedding, encode_embedding
from learned_router.stores.sqlite import LogWriteError, SqliteDecisionLog

__all__ = [
    "SCHEMA_VERSION",
    "DecisionRecord",
    "LogStats",
    "LogWriteError",
    "MemoryDecisionLog",
    "SqliteDecisionLog",
    "decode_embedding",
    "encode_embedding",
    "open_log",
    "open_log_path",
    "read_rows",
]


def open_log(cfg: Any) -> SqliteDecisionLog | MemoryDecisionLog:
    """The store for a ``LogConfig``: SQLite at ``cfg.path`` (``:memory:`` gives a MemoryDecisionLog)."""
    if cfg.path in (None, "", ":memory:"):
        return MemoryDecisionLog(store_prompts=cfg.store_prompts, store_embeddings=cfg.store_embeddings)
    return SqliteDecisionLog(cfg.path, queue_size=cfg.queue_size, store_prompts=cfg.store_prompts,
                             store_embeddings=cfg.store_embeddings)


def open_log_path(path: str | Path) -> SqliteDecisionLog:
    """Open an existing SQLite decision log (for reading: reports, training).

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no decision log at {p}")
    return SqliteDecisionLog(p)


def read_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every decision of the log at ``path`` as a plain dict (``DecisionRecord.to_row``)."""
    store = open_log_path(path)
    try:
        for rec in store.scan():
            yield rec.to_row()
    finally:
        store.close()
