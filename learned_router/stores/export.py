"""Exporting decision records to parquet (pyarrow is imported only when exporting).

Scalar fields become columns; mappings and lists (task probabilities, propensities, attempts, ...) are
JSON strings; the embedding stays float16 bytes (``decode_embedding`` reads it back).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from learned_router.stores.records import DecisionRecord

__all__ = ["JSON_FIELDS", "export_parquet", "flat_row"]

JSON_FIELDS = ("task_probs", "eligible", "excluded", "scores", "propensities", "est_cost_usd", "attempts",
               "breaker_trips", "weights")


def flat_row(record: DecisionRecord) -> dict[str, Any]:
    """One record as a flat dict of scalars (JSON strings for the nested fields)."""
    row = record.to_row()
    for key in JSON_FIELDS:
        row[key] = None if row[key] is None else json.dumps(row[key], separators=(",", ":"))
    return row


def export_parquet(records: Iterable[DecisionRecord], path: str | Path, *, chunk_size: int = 20_000) -> Path:
    """Write ``records`` to a parquet file in chunks (bounded memory). Returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([
        ("request_id", pa.string()), ("ts", pa.float64()), ("schema_version", pa.int32()), ("kind", pa.string()),
        ("tenant", pa.string()), ("session_id", pa.string()), ("policy", pa.string()),
        ("policy_version", pa.string()), ("fallback_reason", pa.string()), ("experiment", pa.string()),
        ("variant", pa.string()), ("assignment_p", pa.float64()), ("task_probs", pa.string()),
        ("embedding", pa.binary()), ("input_tokens_est", pa.int64()), ("output_tokens_est", pa.int64()),
        ("eligible", pa.string()), ("excluded", pa.string()), ("scores", pa.string()),
        ("propensities", pa.string()), ("est_cost_usd", pa.string()), ("chosen_arm", pa.string()),
        ("attempts", pa.string()), ("served_arm", pa.string()), ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()), ("cost_usd", pa.float64()), ("latency_s", pa.float64()),
        ("ttft_s", pa.float64()), ("error_kind", pa.string()), ("breaker_trips", pa.string()),
        ("prompt", pa.string()), ("weights", pa.string()), ("quality", pa.float64()),
        ("quality_source", pa.string()), ("feedback_ts", pa.float64()),
    ])
    with pq.ParquetWriter(out, schema) as writer:
        chunk: list[dict[str, Any]] = []
        for rec in records:
            chunk.append(flat_row(rec))
            if len(chunk) >= chunk_size:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                chunk = []
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    return out
