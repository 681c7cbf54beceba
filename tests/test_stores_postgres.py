"""The PostgreSQL decision log against a real local server: the SQLite store's semantics, two gateways sharing
one log, a router logging into it, training reading from it.

The server is expected at 127.0.0.1:5432 (database ``test``, trust auth); set ``LEARNED_ROUTER_TEST_PG`` to
another URL. Without a reachable server these tests fail (they are not skipped)."""

from __future__ import annotations

import json
import os
import threading
import uuid

import psycopg
import pytest
from test_stores import _decision, _outcome, _record
from test_train import _dataset

from learned_router import Router
from learned_router.config import LogConfig
from learned_router.embedders import HashingEmbedder
from learned_router.sim_fleet import SimFleet
from learned_router.simulator import SimProfile
from learned_router.stores import PostgresDecisionLog, open_log, open_log_path
from learned_router.stores.postgres import redact_url
from learned_router.types import ChatRequest
from training.logdata import load_logged
from training.simulate import simulate_into
from training.train import main as train_main

URL = os.environ.get("LEARNED_ROUTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _server() -> None:
    try:
        with psycopg.connect(URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is not reachable at {redact_url(URL)} (set LEARNED_ROUTER_TEST_PG): {exc}")


@pytest.fixture
def prefix():
    """A unique table prefix; the tables are dropped afterwards."""
    _server()
    name = f"t_{uuid.uuid4().hex[:12]}_"
    yield name
    with psycopg.connect(URL, autocommit=True) as conn:
        for table in ("feedback", "decisions", "schema_info"):
            conn.execute(f"DROP TABLE IF EXISTS {name}{table}")


@pytest.fixture
def schema_url():
    """A URL whose connections use a fresh schema (dropped afterwards): a log configured by URL alone."""
    _server()
    schema = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in URL else "?"
    yield f"{URL}{sep}options=-c%20search_path%3D{schema}"
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_append_flush_get_scan_count(prefix):
    with PostgresDecisionLog(URL, table_prefix=prefix) as store:
        assert store.schema_version() == 2
        for i in range(5):
            store.append(_record(f"r{i}", ts=1000.0 + i, tenant="acme" if i % 2 else "other"))
        store.append_refusal(ChatRequest(messages=({"role": "user", "content": "hi"},), request_id="ref1"),
                             RuntimeError("no arm"))
        assert store.flush()
        assert store.count() == 6 and store.count(kinds=["decision"]) == 5 and store.count(kinds=[]) == 0
        got = store.get("r3")
        assert got == _record("r3", ts=1003.0, tenant="acme")
        assert got.embedding == _record("r3").embedding and got.attempts[0]["error_kind"] == "timeout"
        assert store.get("missing") is None
        assert [r.request_id for r in store.scan()] == ["r0", "r1", "r2", "r3", "r4"]
        assert [r.request_id for r in store.scan(since=1001.0, until=1004.0)] == ["r1", "r2", "r3"]
        assert [r.request_id for r in store.scan(tenant="acme")] == ["r1", "r3"]
        assert [r.kind for r in store.scan(kinds=None)][-1] == "refusal"
        assert len(list(store.scan(chunk_size=2))) == 5
        store.append(_record("r0", ts=2000.0))  # the same id again: replaced and moved to the end
        store.append_durable(_record("r5", ts=2001.0))
        assert [r.request_id for r in store.scan()] == ["r1", "r2", "r3", "r4", "r0", "r5"]
        assert store.get("r0").ts == 2000.0
        assert store.stats_dict()["written"] == 8 and store.queue_depth() == 0
        seq = store.append_decision(_decision("d1"), _outcome("d1"))
        assert seq == 9 and store.flush() and store.get("d1").chosen_arm == "fast::small"
    with pytest.raises(RuntimeError, match="closed"):
        store.append(_record("late"))


def test_feedback_newest_wins_and_tenant_checks(prefix):
    with PostgresDecisionLog(URL, table_prefix=prefix) as store:
        store.append(_record("r1", tenant="acme"))
        store.append(_record("r2", tenant=None))
        assert store.add_feedback("r1", 0.2, source="judge", ts=5.0)  # waits for the pending appends
        assert store.add_feedback("r1", 0.9, source="user", tenant="acme", ts=6.0)
        assert not store.add_feedback("r1", 0.1, tenant="someone-else")
        assert not store.add_feedback("nope", 0.5)
        assert store.add_feedback("r2", 0.4)  # no tenant given: no check
        assert not store.add_feedback("r2", 0.4, tenant="acme")  # the record has no tenant
        with pytest.raises(ValueError):
            store.add_feedback("r1", 1.5)
        r1 = store.get("r1")
        assert (r1.quality, r1.quality_source, r1.feedback_ts) == (0.9, "user", 6.0)
        assert {r.request_id: r.quality for r in store.scan()} == {"r1": 0.9, "r2": 0.4}


def test_two_gateways_share_one_log_without_losing_records(prefix):
    stores = [PostgresDecisionLog(URL, table_prefix=prefix, queue_size=50, batch_size=20) for _ in range(2)]
    n = 300

    def gateway(k: int) -> None:
        for i in range(n):
            stores[k].append(_record(f"g{k}-{i}", ts=1000.0 + i))

    threads = [threading.Thread(target=gateway, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    with PostgresDecisionLog(URL, table_prefix=prefix) as reader:
        ids = [r.request_id for r in reader.scan()]
        assert reader.count() == 2 * n
    assert sorted(ids) == sorted(f"g{k}-{i}" for k in range(2) for i in range(n))
    for k in range(2):  # each gateway's records keep their order
        assert [i for i in ids if i.startswith(f"g{k}-")] == [f"g{k}-{i}" for i in range(n)]


def test_a_router_logs_into_postgres_and_training_reads_it(schema_url):
    with SimFleet([SimProfile("a", default_quality=0.9), SimProfile("b", default_quality=0.8)]) as fleet:
        router = Router.from_config({
            "providers": [fleet.provider_entry("a", quality_prior=0.9),
                          fleet.provider_entry("b", quality_prior=0.8)],
            "routing": {"strategy": "quality"},
            "log": {"path": schema_url, "embed_for_log": True},
        })
        assert isinstance(router.log, PostgresDecisionLog)
        done = [router.complete({"messages": [{"role": "user", "content": f"question {i}"}], "tenant": "t1"})
                for i in range(6)]
        assert router.feedback(done[0].request_id, 0.3, tenant="t1")
        assert not router.feedback(done[1].request_id, 0.3, tenant="t2")
        router.close()
    store = open_log_path(schema_url)
    try:
        records = list(store.scan())
        assert [r.request_id for r in records] == [d.request_id for d in done]
        assert records[0].quality == 0.3 and records[0].served_arm == "a::sim-1"
        data = load_logged(records)
        assert data.n == 6
    finally:
        store.close()
    from typer.testing import CliRunner

    from learned_router.cli import app

    result = CliRunner().invoke(app, ["report", "--log", schema_url, "--json"])  # the CLI reads it by URL too
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["requests"] == 6


def test_training_reads_a_postgres_log_by_url(schema_url, tmp_path):
    with open_log(LogConfig(path=schema_url)) as store:
        simulate_into(store, _dataset(tmp_path / "toy"), policy="uniform", n=400, seed=0,
                      embedder=HashingEmbedder(64), split="all")
        assert store.flush() and store.count() == 400
    out = tmp_path / "model"
    assert train_main(["--log", schema_url, "--out", str(out), "--no-tracking", "--quiet",
                       "--n-components", "8", "--n-draws", "100", "--min-decisions", "100"]) == 0
    report = json.loads((out / "v0001" / "report.json").read_text())
    assert report["log"] == schema_url  # named as given (no password here to redact)


def test_unreachable_database_names_the_url_without_the_password():
    url = "postgresql://someone:s3cret@127.0.0.1:9/test"
    with pytest.raises(ConnectionError) as err:
        PostgresDecisionLog(url, connect_timeout_s=2)
    assert "postgresql://someone:***@127.0.0.1:9/test" in str(err.value) and "s3cret" not in str(err.value)
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        open_log(LogConfig(path=url))


def test_config_keeps_a_log_url_as_it_is(tmp_path):
    from learned_router.config import load_config

    f = tmp_path / "router.yaml"
    f.write_text("providers:\n  - {name: a, kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m,\n"
                 "     price_in_per_mtok: 1, price_out_per_mtok: 1}\n"
                 "log: {path: 'postgresql://gw@db.internal:5432/routing'}\n")
    assert load_config(f).log.path == "postgresql://gw@db.internal:5432/routing"
