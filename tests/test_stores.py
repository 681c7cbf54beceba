"""Decision logs: records round-trip, SQLite WAL writer, feedback, migration, back-pressure, durability."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from learned_router.config import LogConfig
from learned_router.errors import NoEligibleArmError
from learned_router.stores import (
    DecisionRecord,
    MemoryDecisionLog,
    SqliteDecisionLog,
    open_log,
    open_log_path,
    read_rows,
)
from learned_router.stores.records import SCHEMA_VERSION
from learned_router.stores.sqlite import DB_SCHEMA_VERSION
from learned_router.strategies.base import Features
from learned_router.types import ArmId, Attempt, ChatRequest, Decision, Outcome, Weights


def _decision(rid: str = "r1", *, experiment: str | None = None) -> Decision:
    a, b = ArmId("fast::small"), ArmId("big::large")
    return Decision(request_id=rid, arm=a, provider="fast", model="small", strategy="learned", ranking=(a, b),
                    scores={a: 0.9, b: 0.7}, propensities={a: 0.8, b: 0.2}, excluded={"eu::m": "region"},
                    policy_version="v3", experiment=experiment, variant="treatment" if experiment else None,
                    assignment_p=0.5 if experiment else None, task_probs={"code": 0.7, "math": 0.3},
                    input_tokens_est=12, output_tokens_est=40, est_cost_usd={a: 0.001, b: 0.01},
                    weights=Weights(1.0, 0.05, 0.1))


def _outcome(rid: str = "r1") -> Outcome:
    return Outcome(request_id=rid, attempts=(Attempt(ArmId("fast::small"), "error", 0.2, error_kind="timeout"),
                                             Attempt(ArmId("big::large"), "ok", 1.1)),
                   served_arm=ArmId("big::large"), input_tokens=12, output_tokens=33, cost_usd=0.0042,
                   latency_s=1.3, ttft_s=0.4)


def _record(rid: str, ts: float = 1000.0, tenant: str | None = "acme") -> DecisionRecord:
    rec = DecisionRecord.from_decision(_decision(rid), _outcome(rid), embedding=np.linspace(-1, 1, 8),
                                       tenant=tenant, session_id="s1", ts=ts)
    return rec


def test_record_round_trip_keeps_every_field():
    emb = np.linspace(-1, 1, 16, dtype=np.float32)
    rec = DecisionRecord.from_decision(_decision(), _outcome(), embedding=emb, prompt="hello", tenant="t",
                                       session_id="s", ts=5.0, breaker_trips=["fast::small"])
    back = DecisionRecord.from_row(json.loads(json.dumps({**rec.to_row(), "embedding": None})) | {
        "embedding": rec.embedding})
    assert back == rec
    assert back.schema_version == SCHEMA_VERSION
    assert back.chosen_arm == "fast::small" and back.served_arm == "big::large"
    assert back.propensity == pytest.approx(0.8)
    assert [a["status"] for a in back.attempts] == ["error", "ok"]
    assert np.allclose(back.embedding_array(), emb, atol=1e-3)
    assert back.weights == {"quality": 1.0, "cost": 0.05, "latency": 0.1}


def test_record_rejects_a_newer_schema():
    with pytest.raises(ValueError, match="newer"):
        DecisionRecord.from_row({"request_id": "x", "schema_version": SCHEMA_VERSION + 1})


def test_sqlite_round_trip_in_wal_mode(tmp_path):
    with SqliteDecisionLog(tmp_path / "log.db") as store:
        assert store.journal_mode() == "wal"
        for i in range(50):
            store.append(_record(f"r{i}", ts=1000.0 + i))
        assert store.flush(5.0)
        assert store.count() == 50
        got = store.get("r7")
        assert got == _record("r7", ts=1007.0)
        assert [r.request_id for r in store.scan(since=1040.0)] == [f"r{i}" for i in range(40, 50)]
        assert store.get("missing") is None
        assert store.stats_dict()["written"] == 50


def test_router_hooks_honour_privacy_settings(tmp_path):
    cfg = LogConfig(path=str(tmp_path / "log.db"), store_prompts=False, store_embeddings=True)
    store = open_log(cfg)
    req = ChatRequest.coerce({"messages": [{"role": "user", "content": "secret prompt"}], "request_id": "r1",
                              "tenant": "acme", "session_id": "s9"})
    feats = Features(input_tokens=3, output_tokens_est=10, embedding=np.ones(4, dtype=np.float32) / 2,
                     embedder="hashing-4-s0")
    store.append_decision(_decision(), _outcome(), features=feats, request=req, breaker_trips=["fast::small"])
    store.append_refusal(req.with_id("r2"), NoEligibleArmError({"a::m": "budget"}))
    store.close()
    reopened = open_log_path(tmp_path / "log.db")
    rec = reopened.get("r1")
    assert rec.prompt is None and rec.tenant == "acme" and rec.session_id == "s9"
    assert rec.breaker_trips == ["fast::small"]
    assert np.allclose(rec.embedding_array(), 0.5) and rec.embedder == "hashing-4-s0"
    assert reopened.count() == 2 and reopened.count(kinds=["refusal"]) == 1
    assert reopened.get("r2").excluded == {"a::m": "budget"}
    rows = list(read_rows(tmp_path / "log.db"))
    assert [r["request_id"] for r in rows] == ["r1"]
    reopened.close()
    with_prompts = MemoryDecisionLog(store_prompts=True, store_embeddings=False)
    with_prompts.append_decision(_decision(), _outcome(), features=feats, request=req)
    rec = with_prompts.get("r1")
    assert rec.prompt == "secret prompt" and rec.embedding is None and rec.embedder is None


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_feedback_is_joined_and_tenant_checked(tmp_path, kind):
    store = SqliteDecisionLog(tmp_path / "log.db") if kind == "sqlite" else MemoryDecisionLog()
    store.append(_record("r1", tenant="acme"))
    assert store.add_feedback("r1", 0.25, source="judge", tenant="acme", ts=2000.0)
    assert not store.add_feedback("r1", 1.0, tenant="other")
    assert not store.add_feedback("nope", 1.0)
    assert store.add_feedback("r1", 0.75, source="user", ts=2001.0)
    rec = store.get("r1")
    assert (rec.quality, rec.quality_source, rec.feedback_ts) == (0.75, "user", 2001.0)
    assert [r.quality for r in store.scan()] == [0.75]
    with pytest.raises(ValueError):
        store.add_feedback("r1", 1.5)
    store.close()


def _make_v1(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE schema_info (version INTEGER NOT NULL);
        INSERT INTO schema_info VALUES (1);
        CREATE TABLE decisions (request_id TEXT PRIMARY KEY, ts REAL, payload TEXT, quality REAL,
                                quality_source TEXT);
    """)
    for i in range(3):
        payload = {"schema_version": 1, "request_id": f"old{i}", "ts": 10.0 + i, "policy": "balanced",
                   "arm": "a::m", "propensities": {"a::m": 1.0}, "served_arm": "a::m", "cost_usd": 0.01,
                   "tenant": "acme"}
        conn.execute("INSERT INTO decisions VALUES (?, ?, ?, ?, ?)",
                     (f"old{i}", 10.0 + i, json.dumps(payload), 0.5 if i == 1 else None, "user" if i == 1 else None))
    conn.commit()
    conn.close()


def test_migrates_a_version_1_database(tmp_path, caplog):
    path = tmp_path / "v1.db"
    _make_v1(path)
    with caplog.at_level(logging.WARNING), SqliteDecisionLog(path) as store:
        assert store.schema_version() == DB_SCHEMA_VERSION
        assert store.count() == 3
        old = store.get("old1")
        assert old.chosen_arm == "a::m" and old.propensity == 1.0 and old.quality == 0.5
        assert store.get("old0").quality is None
        store.append(_record("new"))
        store.flush()
        assert [r.request_id for r in store.scan()] == ["old0", "old1", "old2", "new"]
    assert "migrating" in caplog.text


def test_back_pressure_blocks_and_drops_nothing(tmp_path, caplog):
    store = SqliteDecisionLog(tmp_path / "log.db", queue_size=2, batch_size=1, flush_interval_s=0.0)
    # A slow writer: another connection holds the write lock for 0.5 s, so the writer's commits wait.
    blocker = sqlite3.connect(tmp_path / "log.db", timeout=30, check_same_thread=False, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(0.5, lambda: blocker.execute("COMMIT"))
    release.start()
    with caplog.at_level(logging.WARNING):
        start = time.perf_counter()
        for i in range(30):
            store.append(_record(f"r{i}", ts=float(i)))
        waited = time.perf_counter() - start
    release.join()
    blocker.close()
    assert waited > 0.3  # the caller was held back instead of losing records
    assert store.flush(10.0)
    stats = store.stats_dict()
    assert stats["blocked"] > 0 and stats["written"] == 30 and stats["failed"] == 0
    assert "queue is full" in caplog.text
    assert store.count() == 30
    store.close()


def test_close_drains_the_queue(tmp_path):
    store = SqliteDecisionLog(tmp_path / "log.db", queue_size=5000, flush_interval_s=1.0)
    for i in range(2000):
        store.append(_record(f"r{i}", ts=float(i)))
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.append(_record("late"))
    again = open_log_path(tmp_path / "log.db")
    assert again.count() == 2000
    again.close()


def test_write_failures_are_reported_and_counted(tmp_path, caplog):
    failures: list[tuple[BaseException, list[DecisionRecord]]] = []
    store = SqliteDecisionLog(tmp_path / "log.db", max_retries=2, on_error=lambda e, recs: failures.append((e, recs)))
    bad = _record("bad")
    bad.scores = {"x": object()}  # not JSON-serialisable: the write cannot succeed
    with caplog.at_level(logging.ERROR):
        store.append(bad)
        assert not store.flush(5.0)
    assert store.stats_dict()["failed"] == 1 and store.stats_dict()["retries"] == 2
    assert failures and failures[0][1][0].request_id == "bad"
    assert "gave up" in caplog.text
    store.append_durable(_record("good"))
    assert store.get("good") is not None
    store.close()


_CRASH_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from learned_router.stores import SqliteDecisionLog, DecisionRecord
    store = SqliteDecisionLog(sys.argv[1], flush_interval_s=0.001)
    i = 0
    while True:
        rec = DecisionRecord(request_id=f"r{i}", ts=float(i), chosen_arm="a::m", propensities={"a::m": 1.0},
                             embedding=np.ones(384, dtype="<f2").tobytes())
        if i % 3 == 0:
            store.append_durable(rec)
            print(rec.request_id, flush=True)
        else:
            store.append(rec)
        i += 1
""")


def test_acknowledged_records_survive_sigkill(tmp_path):
    path = tmp_path / "crash.db"
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    acked: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acked.append(line.strip())
        if len(acked) >= 60:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    conn = sqlite3.connect(path)
    present = {r[0] for r in conn.execute("SELECT request_id FROM decisions")}
    conn.close()
    assert set(acked) <= present
    store = open_log_path(path)  # the file is still a valid log after the crash
    assert store.count() >= len(acked)
    store.close()
