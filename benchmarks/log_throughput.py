"""Decision-log throughput, the time a caller is blocked per append, and crash durability.

* **store**: ``SqliteDecisionLog.append`` of realistic records (384-d float16 embedding, 11 arms with
  propensities, scores and predicted costs, one attempt): caller-blocked µs per append (p50/p99/mean) and
  decisions/s until everything is committed (``flush``).
* **append_decision**: the router's path, building the record from a Decision/Outcome and appending it.
* **baseline**: a direct synchronous ``INSERT`` + ``COMMIT`` per record on the caller's thread (same
  schema, same pragmas: WAL, synchronous=NORMAL).
* **crash**: a subprocess appends records (every third with ``append_durable``) and is killed with SIGKILL;
  every record acknowledged as durable must be in the file.

Usage: ``python benchmarks/log_throughput.py [--n 20000] [--json out/log.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from learned_router.stores import DecisionRecord, SqliteDecisionLog  # noqa: E402
from learned_router.stores._writer import to_db  # noqa: E402
from learned_router.stores.sqlite import _INSERT  # noqa: E402
from learned_router.strategies.base import Features  # noqa: E402
from learned_router.types import ArmId, Attempt, ChatRequest, Decision, Outcome, Weights  # noqa: E402

ARMS = [ArmId(f"provider{i}::model-{i}") for i in range(11)]


def _decision(i: int) -> tuple[Decision, Outcome]:
    arm = ARMS[i % len(ARMS)]
    d = Decision(request_id=f"req-{i:08d}", arm=arm, provider="p", model="m", strategy="learned",
                 ranking=tuple(ARMS), scores={a: 0.5 for a in ARMS}, propensities={a: 1 / 11 for a in ARMS},
                 excluded={}, policy_version="v0001", task_probs={f"task{j}": 1 / 11 for j in range(11)},
                 input_tokens_est=120, output_tokens_est=300, est_cost_usd={a: 0.0012 for a in ARMS},
                 weights=Weights(1.0, 0.05, 0.05))
    o = Outcome(request_id=d.request_id, attempts=(Attempt(arm, "ok", 0.8),), served_arm=arm, input_tokens=120,
                output_tokens=280, cost_usd=0.0011, latency_s=0.81, ttft_s=0.2)
    return d, o


def _records(n: int, emb: np.ndarray) -> list[DecisionRecord]:
    return [DecisionRecord.from_decision(*_decision(i), embedding=emb, tenant="acme", session_id="s") for i in range(n)]


def _pct(us: np.ndarray) -> dict[str, float]:
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "mean_us": float(us.mean()), "max_us": float(us.max())}


def bench_store(folder: Path, n: int, emb: np.ndarray) -> dict:
    recs = _records(n, emb)
    store = SqliteDecisionLog(folder / "store.db", queue_size=max(10_000, n))
    lat = np.empty(n)
    t0 = time.perf_counter()
    for i, rec in enumerate(recs):
        s = time.perf_counter()
        store.append(rec)
        lat[i] = time.perf_counter() - s
    store.flush(None)
    total = time.perf_counter() - t0
    stats = store.stats_dict()
    store.close()
    return {"decisions_per_s": n / total, **_pct(lat * 1e6), "stats": stats}


def bench_append_decision(folder: Path, n: int, emb: np.ndarray) -> dict:
    pairs = [_decision(i) for i in range(n)]
    req = ChatRequest.coerce({"messages": [{"role": "user", "content": "hi"}], "tenant": "acme"})
    feats = Features(120, 300, embedding=emb)
    store = SqliteDecisionLog(folder / "router.db", queue_size=max(10_000, n))
    lat = np.empty(n)
    t0 = time.perf_counter()
    for i, (d, o) in enumerate(pairs):
        s = time.perf_counter()
        store.append_decision(d, o, features=feats, request=req)
        lat[i] = time.perf_counter() - s
    store.flush(None)
    total = time.perf_counter() - t0
    store.close()
    return {"decisions_per_s": n / total, **_pct(lat * 1e6)}


def bench_baseline(folder: Path, n: int, emb: np.ndarray) -> dict:
    recs = _records(n, emb)
    store = SqliteDecisionLog(folder / "baseline.db")  # creates the same schema
    store.close()
    conn = sqlite3.connect(folder / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    lat = np.empty(n)
    t0 = time.perf_counter()
    for i, rec in enumerate(recs):
        s = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute(_INSERT, to_db(rec))
        conn.execute("COMMIT")
        lat[i] = time.perf_counter() - s
    total = time.perf_counter() - t0
    conn.close()
    return {"decisions_per_s": n / total, **_pct(lat * 1e6)}


_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from learned_router.stores import SqliteDecisionLog, DecisionRecord
    store = SqliteDecisionLog(sys.argv[1], flush_interval_s=0.005)
    emb = np.ones(384, dtype="<f2").tobytes()
    i = 0
    while True:
        rec = DecisionRecord(request_id=f"r{i}", ts=float(i), chosen_arm="a::m", propensities={"a::m": 1.0},
                             embedding=emb)
        if i % 3 == 0:
            store.append_durable(rec)
            print(rec.request_id, flush=True)
        else:
            store.append(rec)
        i += 1
""")


def crash_test(folder: Path, kill_after_s: float = 2.0) -> dict:
    path = folder / "crash.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    acked: list[str] = []
    assert proc.stdout is not None
    start = time.monotonic()
    for line in proc.stdout:
        acked.append(line.strip())
        if time.monotonic() - start > kill_after_s:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    conn = sqlite3.connect(path)
    present = {r[0] for r in conn.execute("SELECT request_id FROM decisions")}
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    lost = sorted(set(acked) - present)
    return {"acknowledged_durable": len(acked), "rows_in_file": len(present), "acknowledged_lost": len(lost),
            "integrity_check": integrity}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    emb = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        out = {"n": args.n, "store_append": bench_store(folder, args.n, emb),
               "router_append_decision": bench_append_decision(folder, args.n, emb),
               "baseline_sync_insert_commit": bench_baseline(folder, min(args.n, 5000), emb),
               "crash": crash_test(folder)}
    for name in ("store_append", "router_append_decision", "baseline_sync_insert_commit"):
        r = out[name]
        print(f"{name:30} {r['decisions_per_s']:9.0f} decisions/s   caller blocked: p50 {r['p50_us']:7.1f} µs  "
              f"p99 {r['p99_us']:8.1f} µs  mean {r['mean_us']:7.1f} µs  max {r['max_us']:9.1f} µs")
    c = out["crash"]
    print(f"crash test: {c['acknowledged_durable']} acknowledged durable, {c['rows_in_file']} rows in the file, "
          f"{c['acknowledged_lost']} acknowledged records lost, integrity {c['integrity_check']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0 if c["acknowledged_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
