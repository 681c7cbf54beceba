"""Serving trained models: a version folder, a model folder with champion.json, and an A/B experiment of a
trained model against the rules, with every decision logged with its variant."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from learned_router import Router
from learned_router.experiments import ab_report
from learned_router.sim_fleet import SimFleet
from learned_router.simulator import SimProfile
from learned_router.stores import open_log_path
from learned_router.strategies.thompson import fit_thompson

ARMS = ["good::sim-1", "cheap::sim-1"]


@pytest.fixture(scope="module")
def fleet():
    with SimFleet([SimProfile("good", default_quality=0.9), SimProfile("cheap", default_quality=0.4)]) as f:
        yield f


def write_model(root: Path) -> Path:
    """A model folder as training writes it: <root>/v0001/policy + champion.json."""
    from learned_router.embedders import HashingEmbedder

    rng = np.random.default_rng(0)
    texts = [f"question number {i} about topic {i % 7}" for i in range(400)]
    emb = HashingEmbedder().embed(texts)
    arm = rng.integers(0, 2, 400)
    reward = np.where(arm == 0, 0.9, 0.3) + rng.normal(0, 0.05, 400)
    fit_thompson(emb, np.full(400, 12), ARMS, arm, reward, n_components=8).save(root / "v0001" / "policy")
    (root / "champion.json").write_text(json.dumps({"version": "v0001"}))
    return root


def config(fleet, tmp_path, **routing):
    return {
        "providers": [fleet.provider_entry("good", quality_prior=0.5), fleet.provider_entry("cheap", quality_prior=0.5)],
        "routing": {"strategy": "learned", "weights": {"quality": 1.0, "cost": 0.0, "latency": 0.0}, **routing},
        "embedder": {"kind": "hashing"},
        "log": {"path": str(tmp_path / "log.sqlite")},
    }


@pytest.mark.parametrize("which", ["model_folder", "version_folder"])
def test_router_serves_a_trained_model(fleet, tmp_path, which):
    root = write_model(tmp_path / "models" / "m")
    path = root if which == "model_folder" else root / "v0001"
    router = Router.from_config(config(fleet, tmp_path, model_path=str(path)), seed=1)
    decisions = [router.route({"messages": [{"role": "user", "content": f"question {i}"}]}) for i in range(50)]
    router.close()
    assert all(d.strategy == "learned" and d.fallback_reason is None for d in decisions)
    assert Counter(d.provider for d in decisions)["good"] >= 45
    assert all(abs(sum(d.propensities.values()) - 1) < 1e-6 for d in decisions)


def test_a_model_folder_without_champion_names_its_versions_and_the_rules_route(fleet, tmp_path):
    root = write_model(tmp_path / "models" / "m")
    (root / "v0001" / "manifest.json").write_text("{}")
    (root / "champion.json").unlink()  # training promoted no version
    router = Router.from_config(config(fleet, tmp_path, model_path=str(root)), seed=1)
    decision = router.route({"messages": [{"role": "user", "content": "question 1"}]})
    router.close()
    assert decision.strategy != "learned"
    assert decision.fallback_reason == (f"learned policy unusable: {root} has no champion: training promoted none "
                                        f"of its versions (v0001); serve a version folder such as {root / 'v0001'} "
                                        "to use it anyway")


def test_a_registry_alias_that_is_not_set_yet_leaves_routing_to_the_rules(fleet, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # an empty registry: no version was ever promoted
    cfg = config(fleet, tmp_path, model_path="models:/learned-router@champion", tracking_uri=uri)
    router = Router.from_config(cfg, seed=1)
    decision = router.route({"messages": [{"role": "user", "content": "question 1"}]})
    router.close()
    assert decision.strategy != "learned"
    assert decision.fallback_reason.startswith(
        "learned policy unusable: cannot resolve models:/learned-router@champion")


def test_a_policy_trained_on_another_embedder_is_not_used(fleet, tmp_path):
    """Same width, other embedding space: the rules route, and every decision and the log say why."""
    from learned_router.strategies.thompson import ThompsonStrategy

    root = write_model(tmp_path / "models" / "m")
    policy = ThompsonStrategy.load(root / "v0001" / "policy")
    policy.embedder = "static-all-MiniLM-L6-v2"
    policy.save(root / "v0001" / "policy")
    router = Router.from_config(config(fleet, tmp_path, model_path=str(root)), seed=1)
    decision = router.route({"messages": [{"role": "user", "content": "question 1"}]})
    router.close()
    assert decision.strategy != "learned"
    assert "trained on 'static-all-MiniLM-L6-v2' embeddings" in (decision.fallback_reason or "")
    assert "hashing-" in decision.fallback_reason


def test_ab_experiment_between_a_trained_model_and_the_rules(fleet, tmp_path):
    root = write_model(tmp_path / "models" / "m")
    cfg = config(fleet, tmp_path)
    cfg["routing"]["strategy"] = "cost"
    cfg["experiments"] = [{"name": "exp", "unit": "session", "variants": [
        {"name": "learned", "weight": 0.5, "strategy": "learned", "model_path": str(root)},
        {"name": "rules", "weight": 0.5, "strategy": "cost"}]}]
    router = Router.from_config(cfg, seed=0)
    done = []
    for i in range(60):
        c = router.complete({"messages": [{"role": "user", "content": f"q{i}"}], "session_id": f"s{i % 12}"})
        router.feedback(c.request_id, 0.9 if c.provider == "good" else 0.4)
        done.append(c)
    router.close()
    by_session: dict[str, set[str]] = {}
    for i, c in enumerate(done):
        by_session.setdefault(f"s{i % 12}", set()).add(c.decision.variant)
    assert all(len(v) == 1 for v in by_session.values())  # sticky per session
    assert {c.decision.variant for c in done} == {"learned", "rules"}
    log = open_log_path(tmp_path / "log.sqlite")
    report = ab_report(log, experiment="exp")
    log.close()
    text = json.dumps(report, default=str)
    assert "learned" in text and "rules" in text
    assert sum(v["requests"] for v in report["experiments"]["exp"]["variants"].values()) == 60


@pytest.mark.parametrize(("refit_classes", "manifest_lists_tasks"), [
    (("chat", "code", "math"), True), (("code", "math"), True), (("code", "math"), False)])
def test_a_refitted_classifier_serves_only_a_policy_that_reads_its_classes(fleet, tmp_path, refit_classes,
                                                                           manifest_lists_tasks):
    """Training fits the policy on the logged task probabilities and refits the classifier on the logged
    labels; a classifier predicting fewer classes than the policy reads would feed it zeros for the rest."""
    from learned_router.classifier import TaskClassifier
    from learned_router.embedders import HashingEmbedder

    rng = np.random.default_rng(0)
    tasks = np.array(["chat", "code", "math"])[rng.integers(0, 3, 300)]
    emb = HashingEmbedder().embed([f"{t} question number {i}" for i, t in enumerate(tasks)])
    probs = (tasks[:, None] == np.array(["chat", "code", "math"])).astype(float)
    arm = rng.integers(0, 2, 300)
    version = tmp_path / "models" / "m" / "v0001"
    fit_thompson(emb, np.full(300, 12), ARMS, arm, np.where(arm == 0, 0.9, 0.3), n_components=8,
                 task_probs=probs, task_labels=["chat", "code", "math"]).save(version / "policy")
    keep = np.isin(tasks, refit_classes)
    refit = TaskClassifier().fit(emb[keep], tasks[keep], embedder_name=HashingEmbedder().name)
    refit.save(version / "classifier")
    manifest = json.loads((version / "policy" / "policy_manifest.json").read_text())
    assert manifest["task_labels"] == ["chat", "code", "math"]
    if not manifest_lists_tasks:  # a policy saved before the manifest listed them: its state is read instead
        del manifest["task_labels"]
        (version / "policy" / "policy_manifest.json").write_text(json.dumps(manifest))
    router = Router.from_config(config(fleet, tmp_path, model_path=str(version)), seed=1)
    classifier = router.planner.features.classifier
    decision = router.route({"messages": [{"role": "user", "content": "code question number 7"}]})
    router.close()
    assert decision.strategy == "learned"
    if len(refit_classes) == 3:
        assert classifier is not None and classifier.labels_ == ["chat", "code", "math"]
        assert set(decision.task_probs) == {"chat", "code", "math"}
    else:  # no classifier matches hashing embeddings among the shipped ones: none rather than a partial one
        assert classifier is None and decision.task_probs == {}
