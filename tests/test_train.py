"""Training from a decision log: simulation, fitting, off-policy report, model folder, MLflow, promotion gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learned_router.embedders import HashingEmbedder
from learned_router.stores import DecisionRecord, SqliteDecisionLog
from learned_router.strategies.thompson import ThompsonStrategy
from training.simulate import simulate_into
from training.tracking import promotion_decision, resolve_model_uri
from training.train import main

MODELS = {"small": (0.1, 0.2, 0.2, 200.0), "medium": (1.0, 2.0, 0.4, 100.0), "large": (10.0, 30.0, 0.8, 40.0)}


def _dataset(root: Path, n: int = 360) -> Path:
    """Three models; 'small' is right on chat, only 'large' on math, 'medium' on code."""
    rng = np.random.default_rng(7)
    tasks = np.array(["chat", "math", "code"])[np.arange(n) % 3]
    words = {"chat": "hello how are you today friend", "math": "solve integral equation derivative sum",
             "code": "python function bug compile class"}
    prompts = [f"{words[t]} {' '.join(rng.choice(words[t].split(), 4))} #{i}" for i, t in enumerate(tasks)]
    p_right = {"small": {"chat": 0.9, "math": 0.1, "code": 0.3}, "medium": {"chat": 0.9, "math": 0.4, "code": 0.9},
               "large": {"chat": 0.95, "math": 0.95, "code": 0.95}}
    rows = []
    for i, t in enumerate(tasks):
        for m, (pin, pout, ttft, tps) in MODELS.items():
            out = 100
            rows.append({"prompt_id": f"p{i}", "model": m, "quality": float(rng.random() < p_right[m][t]),
                         "cost_usd": (len(prompts[i]) / 4 * pin + out * pout) / 1e6, "output_tokens": out,
                         "latency_s": ttft + out / tps})
    root.mkdir(parents=True)
    pd.DataFrame({"prompt_id": [f"p{i}" for i in range(n)], "prompt": prompts, "task": tasks,
                  "split": ["train" if i % 10 < 7 else "test" for i in range(n)]}).to_parquet(root / "prompts.parquet")
    pd.DataFrame(rows).to_parquet(root / "outcomes.parquet")
    (root / "models.json").write_text(json.dumps({m: {"price_in_per_mtok": v[0], "price_out_per_mtok": v[1],
                                                      "ttft_s": v[2], "output_tokens_per_s": v[3]}
                                                  for m, v in MODELS.items()}))
    (root / "meta.json").write_text(json.dumps({"name": "toy"}))
    return root


@pytest.fixture(scope="module")
def simulated_log(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    data = _dataset(root / "toy")
    with SqliteDecisionLog(root / "log.db") as store:
        sim = simulate_into(store, data, policy="uniform", n=1200, seed=0, embedder=HashingEmbedder(64),
                            split="all")
        assert store.count() == 1200
    assert np.allclose(sim.propensities, 1 / 3)
    return root / "log.db"


def test_simulated_records_carry_propensities_and_embeddings(simulated_log):
    store = SqliteDecisionLog(simulated_log)
    rec = next(iter(store.scan()))
    store.close()
    assert rec.propensity == pytest.approx(1 / 3) and len(rec.propensities) == 3
    assert rec.embedding_array().shape == (64,) and rec.quality in (0.0, 1.0)
    assert rec.task_label in ("chat", "math", "code") and rec.chosen_arm == rec.served_arm
    assert rec.embedder == HashingEmbedder(64).name


def test_train_writes_a_model_logs_to_mlflow_and_gates_promotion(simulated_log, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "models" / "toy"
    assert main(["--log", str(simulated_log), "--out", str(out), "--tracking-uri", uri, "--quiet",
                 "--n-components", "8", "--n-draws", "200"]) == 0
    v1 = out / "v0001"
    report = json.loads((v1 / "report.json").read_text())
    manifest = json.loads((v1 / "manifest.json").read_text())
    assert set(report["policies"]) >= {"learned", "balanced", "cost", "quality", "latency", "task"}
    learned = report["policies"]["learned"]["utility"]["dr"]
    assert learned["ci_low"] < learned["value"] < learned["ci_high"]
    # the learned policy routes math to 'large' and chat to 'small': better quality than the uniform logger
    assert report["policies"]["learned"]["quality"]["dr"]["value"] > report["logging_policy"]["quality"]["value"]
    assert report["promotion"]["promoted"] and report["registry_version"] == "1"
    assert set(report["classifier"]["per_class"]) == {"chat", "math", "code"}
    assert manifest["files"]["policy/policy_state.json"]
    assert ThompsonStrategy.load(v1 / "policy").ready
    assert ThompsonStrategy.load(v1 / "policy").embedder == HashingEmbedder(64).name  # served only with it
    assert json.loads((v1 / "classifier" / "manifest.json").read_text())["embedder"]["name"] == HashingEmbedder(64).name

    champion_dir = resolve_model_uri("models:/learned-router@champion", tracking_uri=uri, dst=tmp_path / "dl")
    assert (champion_dir / "policy").is_dir() and json.loads((champion_dir / "manifest.json").read_text())[
        "version"] == "v0001"

    assert main(["--log", str(simulated_log), "--out", str(out), "--tracking-uri", uri, "--quiet",
                 "--n-components", "8", "--n-draws", "200"]) == 0
    second = json.loads((out / "v0002" / "report.json").read_text())
    assert second["registry_version"] == "2"
    champ = second["champion"]["estimate"]
    assert champ == pytest.approx(second["policies"]["champion"]["utility"]["dr"]["value"])
    expected, _ = promotion_decision(second["policies"]["learned"]["utility"]["dr"]["ci_low"], champ,
                                     serving_value=second["logging_policy"]["utility"]["value"])
    assert second["promotion"]["promoted"] == expected
    assert not expected  # same data, same model: the lower bound cannot beat the champion's estimate


def test_training_is_deterministic_for_a_seed(simulated_log, tmp_path):
    for name in ("a", "b"):
        assert main(["--log", str(simulated_log), "--out", str(tmp_path / name), "--no-tracking", "--quiet",
                     "--seed", "3", "--n-components", "8", "--n-draws", "100"]) == 0
    a, b = (json.loads((tmp_path / n / "v0001" / "report.json").read_text()) for n in ("a", "b"))
    assert a["policies"] == b["policies"]
    state = "v0001/policy/policy_state.json"
    assert (tmp_path / "a" / state).read_bytes() == (tmp_path / "b" / state).read_bytes()


def test_clear_errors_for_unusable_logs(tmp_path, capsys):
    with SqliteDecisionLog(tmp_path / "empty.db"):
        pass
    assert main(["--log", str(tmp_path / "empty.db"), "--out", str(tmp_path / "m"), "--no-tracking", "--quiet"]) == 2
    assert "holds no decisions" in capsys.readouterr().err
    with SqliteDecisionLog(tmp_path / "small.db") as store:
        for i in range(30):
            store.append(DecisionRecord(request_id=f"r{i}", chosen_arm="a::m", propensities={"a::m": 1.0},
                                        embedding=np.ones(8, dtype="<f2").tobytes(), quality=1.0))
    assert main(["--log", str(tmp_path / "small.db"), "--out", str(tmp_path / "m"), "--no-tracking", "--quiet"]) == 2
    assert "only 30 usable decisions" in capsys.readouterr().err
    with SqliteDecisionLog(tmp_path / "mixed.db") as store:
        for i in range(300):
            store.append(DecisionRecord(request_id=f"r{i}", chosen_arm="a::m", propensities={"a::m": 1.0},
                                        embedding=np.ones(8 if i < 100 else 16, dtype="<f2").tobytes()))
    assert main(["--log", str(tmp_path / "mixed.db"), "--out", str(tmp_path / "m"), "--no-tracking", "--quiet"]) == 2
    assert "mixes embedders" in capsys.readouterr().err
    with SqliteDecisionLog(tmp_path / "two.db") as store:  # same width, different embedders
        for i in range(300):
            store.append(DecisionRecord(request_id=f"r{i}", chosen_arm="a::m", propensities={"a::m": 1.0},
                                        embedding=np.ones(8, dtype="<f2").tobytes(),
                                        embedder="all-MiniLM-L6-v2" if i < 100 else "static-all-MiniLM-L6-v2"))
    assert main(["--log", str(tmp_path / "two.db"), "--out", str(tmp_path / "m"), "--no-tracking", "--quiet"]) == 2
    assert "was embedded by 'static-all-MiniLM-L6-v2', earlier ones by 'all-MiniLM-L6-v2'" in capsys.readouterr().err
    assert main(["--log", str(tmp_path / "missing.db"), "--out", str(tmp_path / "m"), "--no-tracking", "--quiet"]) == 2


def test_promotion_gate():
    assert promotion_decision(0.5, None) == (True, "no champion yet")
    assert promotion_decision(0.61, 0.6)[0]
    assert not promotion_decision(0.59, 0.6)[0]
    assert not promotion_decision(0.61, 0.6, min_improvement=0.05)[0]
    assert not promotion_decision(None, 0.1)[0]
    assert not promotion_decision(float("nan"), None)[0]
    # the traffic's own observed value is a baseline too: a first version worse than the rules that served
    # the log is not promoted
    assert promotion_decision(0.5, None, serving_value=0.6) == (
        False, "lower bound 0.50000 does not beat the logged traffic's observed 0.60000")
    assert promotion_decision(0.7, None, serving_value=0.6)[0]
    assert promotion_decision(0.65, 0.7, serving_value=0.6)[1] == "lower bound 0.65000 does not beat the champion's 0.70000"
    assert promotion_decision(0.65, 0.5, serving_value=0.7)[1].endswith("the logged traffic's observed 0.70000")


def test_hyperparameters_are_cross_validated_and_recorded(simulated_log, tmp_path, capsys):
    out = tmp_path / "auto"
    assert main(["--log", str(simulated_log), "--out", str(out), "--no-tracking", "--quiet", "--n-draws", "100"]) == 0
    report = json.loads((out / "v0001" / "report.json").read_text())
    hyper = report["hyperparameters"]
    assert hyper["chosen_by"] == "cross-validation" and hyper["dim"] <= 45
    assert hyper["alpha"] in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
    assert 0.0 < hyper["cv_value"] <= 1.0 and hyper["cv_error"] > 0.0
    assert json.loads((out / "v0001" / "manifest.json").read_text())["hyperparameters"] == hyper
    # the toy's best arm depends on the topic, so the chosen policy must beat every rule on utility
    utility = {name: p["utility"]["dr"]["value"] for name, p in report["policies"].items()}
    assert utility["learned"] > max(v for k, v in utility.items() if k != "learned"), utility

    given = tmp_path / "given"
    assert main(["--log", str(simulated_log), "--out", str(given), "--no-tracking", "--quiet", "--n-draws", "100",
                 "--n-components", "8", "--alpha", "2.5"]) == 0
    hyper = json.loads((given / "v0001" / "report.json").read_text())["hyperparameters"]
    assert hyper | {"dim": 0} == {"n_components": 8, "n_clusters": 0, "alpha": 2.5, "cv_error": None,
                                  "cv_value": None, "chosen_by": "arguments", "dim": 0}

    assert main(["--log", str(simulated_log), "--out", str(tmp_path / "narrow"), "--no-tracking", "--quiet",
                 "--max-dim", "5"]) == 2
    assert "--max-dim: max_dim 5 is below the narrowest context" in capsys.readouterr().err
