"""The router writes every decision, refusal and failure to the SQLite decision log; feedback joins later;
``learned-router report --log`` rebuilds the analytics from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from learned_router import AllAttemptsFailedError, NoEligibleArmError, Router
from learned_router.sim_fleet import SimFleet
from learned_router.simulator import SimProfile
from learned_router.stores import open_log_path

MSG = {"messages": [{"role": "user", "content": "Translate 'good morning' into French."}]}


@pytest.fixture(scope="module")
def fleet():
    with SimFleet([SimProfile("a", default_quality=0.9), SimProfile("b", default_quality=0.8)]) as f:
        yield f


def cfg(fleet, tmp_path, **log):
    return {
        "providers": [fleet.provider_entry("a", quality_prior=0.9, region="us"),
                      fleet.provider_entry("b", quality_prior=0.8, region="us")],
        "routing": {"strategy": "quality"},
        "breaker": {"failure_threshold": 2},
        "failover": {"attempt_timeout_s": 1.0},
        "log": {"path": str(tmp_path / "decisions.sqlite"), **log},
    }


def test_every_request_is_logged_with_attempts_and_feedback(fleet, tmp_path):
    fleet.profiles["a"].set_mode("error500")
    try:
        router = Router.from_config(cfg(fleet, tmp_path))
        done = [router.complete({**MSG, "tenant": "t1", "session_id": "s1"}) for _ in range(4)]
        with pytest.raises(NoEligibleArmError):
            router.route({**MSG, "region": "eu"})
        with pytest.raises(NoEligibleArmError):
            router.complete({**MSG, "region": "eu"})
        assert router.feedback(done[0].request_id, 0.25, source="judge")
        assert not router.feedback(done[1].request_id, 0.5, tenant="someone-else")
        assert not router.feedback("no-such-request", 0.5)
        router.close()  # drains the writer
    finally:
        fleet.profiles["a"].set_mode("ok")

    log = open_log_path(tmp_path / "decisions.sqlite")
    records = list(log.scan(kinds=None))
    log.close()
    decisions = [r for r in records if r.kind == "decision"]
    assert [r.request_id for r in decisions] == [c.request_id for c in done]
    first = decisions[0]
    assert first.chosen_arm == "a::sim-1" and first.served_arm == "b::sim-1"
    assert [a["error_kind"] for a in first.attempts] == ["unavailable", None]
    assert first.propensities["a::sim-1"] == 1.0 and first.policy == "quality"
    assert first.tenant == "t1" and first.session_id == "s1"
    assert first.quality == 0.25 and first.quality_source == "judge"
    assert first.prompt is None  # prompts are not stored unless the config says so
    assert first.cost_usd == pytest.approx(done[0].cost_usd)
    assert "a::sim-1" in decisions[1].breaker_trips  # the second failure opened the breaker
    assert "circuit breaker open" in decisions[2].excluded["a::sim-1"]
    refusals = [r for r in records if r.kind == "refusal"]
    assert len(refusals) == 1  # route() explains without logging; complete() logs the refusal

    out = subprocess.run([sys.executable, "-m", "learned_router", "report", "--log",
                          str(tmp_path / "decisions.sqlite"), "--json"], capture_output=True, text=True, check=True)
    report = {row["arm"]: row for row in json.loads(out.stdout)["providers"]}
    assert report["a::sim-1"]["errors_by_kind"] == {"unavailable": 2}
    assert report["a::sim-1"]["breaker_trips"] == 1
    assert report["b::sim-1"]["successes"] == 4
    table = subprocess.run([sys.executable, "-m", "learned_router", "report", "--log",
                            str(tmp_path / "decisions.sqlite")], capture_output=True, text=True, check=True,
                           env={**os.environ, "COLUMNS": "200"})
    assert "a::sim-1" in table.stdout and "unavailable:2" in table.stdout


def test_prompts_are_stored_only_when_allowed(fleet, tmp_path):
    router = Router.from_config(cfg(fleet, tmp_path, store_prompts=True))
    c = router.complete(MSG)
    router.close()
    log = open_log_path(tmp_path / "decisions.sqlite")
    assert "good morning" in (log.get(c.request_id).prompt or "")
    log.close()


def test_failed_requests_are_logged(fleet, tmp_path):
    for p in fleet.profiles.values():
        p.set_mode("malformed")
    try:
        router = Router.from_config(cfg(fleet, tmp_path))
        with pytest.raises(AllAttemptsFailedError) as info:
            router.complete(MSG)
        router.close()
    finally:
        for p in fleet.profiles.values():
            p.set_mode("ok")
    log = open_log_path(tmp_path / "decisions.sqlite")
    rec = log.get(info.value.request_id)
    log.close()
    assert rec.served_arm is None and rec.error_kind == "bad_response" and len(rec.attempts) == 2
