"""TaskClassifier: fitting, probabilities, calibration, persistence, and accuracy on real labelled prompts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from learned_router.classifier import TASK_TAXONOMY, TaskClassifier, _fit_temperature, _softmax
from learned_router.embedders import HashingEmbedder, MiniLMEmbedder
from learned_router.errors import ConfigError, NotFittedError
from training.train_classifier import (
    DEFAULT_LABELS,
    TASK_MAP,
    fit_from_arrays,
    load_task_labels,
    train_task_classifier,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHIPPED = Path(__file__).resolve().parent.parent / "models" / "task_classifier"


def _blobs(rng: np.random.Generator, n_per: int = 60, dim: int = 16, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(k, dim)) * 2.0
    X = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres]).astype(np.float32)
    y = np.repeat([f"class_{i}" for i in range(k)], n_per)
    return X, y


@pytest.fixture(scope="module")
def fitted() -> tuple[TaskClassifier, np.ndarray, np.ndarray]:
    X, y = _blobs(np.random.default_rng(0))
    return TaskClassifier().fit(X, y, embedder_name="blobs", data_sha256="abc"), X, y


def test_fit_predict_proba_shapes_and_sums(fitted: tuple[TaskClassifier, np.ndarray, np.ndarray]) -> None:
    clf, X, y = fitted
    assert list(clf.classes_) == ["class_0", "class_1", "class_2"]
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba >= 0).all()
    assert (clf.predict(X) == y).mean() > 0.95
    assert clf.predict_proba(X[0]).shape == (1, 3)
    d = clf.predict_dicts(X[:2])
    assert set(d[0]) == set(clf.classes_) and sum(d[0].values()) == pytest.approx(1.0)
    one = clf.predict_dict(np.asarray(X[1], dtype=np.float32))  # the per-request path: same numbers
    assert one == pytest.approx(d[1], abs=1e-6) and list(one) == list(d[1])
    with pytest.raises(ValueError, match="width"):
        clf.predict_proba(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="width"):
        clf.predict_dict(np.zeros(5, dtype=np.float32))


def test_not_fitted_and_bad_input() -> None:
    with pytest.raises(NotFittedError):
        TaskClassifier().predict_proba(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="two classes"):
        TaskClassifier().fit(np.zeros((4, 3)), ["a"] * 4)
    with pytest.raises(ValueError):
        TaskClassifier().fit(np.zeros((4, 3)), ["a", "b"])


def test_binary_classifier() -> None:
    X, y = _blobs(np.random.default_rng(1), k=2)
    clf = TaskClassifier().fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert (clf.predict(X) == y).mean() > 0.95


def test_temperature_fit_recovers_the_true_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6000, 4)) * 3.0
    p = _softmax(logits / 2.0)
    y = np.array([rng.choice(4, p=row) for row in p])
    assert _fit_temperature(logits, y) == pytest.approx(2.0, rel=0.1)


def test_report(fitted: tuple[TaskClassifier, np.ndarray, np.ndarray]) -> None:
    clf, X, y = fitted
    rep = clf.report(X, y)
    assert set(rep["per_class"]) == set(clf.classes_)
    assert rep["accuracy"] > 0.95 and 0 <= rep["ece"] < 0.2
    assert sum(m["support"] for m in rep["per_class"].values()) == len(y) == rep["n"]
    assert np.asarray(rep["confusion"]).sum() == len(y)
    with pytest.raises(ValueError, match="not known"):
        clf.report(X[:1], ["nope"])


def test_save_load_round_trip(tmp_path: Path, fitted: tuple[TaskClassifier, np.ndarray, np.ndarray]) -> None:
    clf, X, _ = fitted
    clf.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["labels"] == ["class_0", "class_1", "class_2"]
    assert manifest["embedder"] == {"name": "blobs", "dim": 16}
    assert manifest["data_sha256"] == "abc" and manifest["created"] and manifest["versions"]["scikit-learn"]
    loaded = TaskClassifier.load(tmp_path, embedder_name="blobs", embedder_dim=16)
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), atol=1e-7)


def test_load_errors(tmp_path: Path, fitted: tuple[TaskClassifier, np.ndarray, np.ndarray]) -> None:
    clf, _, _ = fitted
    with pytest.raises(NotFittedError):
        TaskClassifier.load(tmp_path / "missing")
    clf.save(tmp_path)
    with pytest.raises(ConfigError, match="embeddings"):
        TaskClassifier.load(tmp_path, embedder_name="all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="16-d"):
        TaskClassifier.load(tmp_path, embedder_dim=384)
    with pytest.raises(ConfigError):
        TaskClassifier.load(tmp_path).check_embedder(HashingEmbedder(dim=16))
    manifest_path = tmp_path / "manifest.json"
    good = manifest_path.read_text()
    manifest_path.write_text(json.dumps({**json.loads(good), "labels": ["class_0", "class_1", "class_2", "x"]}))
    with pytest.raises(ConfigError, match="do not match"):
        TaskClassifier.load(tmp_path)
    manifest_path.write_text(good.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(ConfigError, match="format_version"):
        TaskClassifier.load(tmp_path)
    manifest_path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        TaskClassifier.load(tmp_path)
    manifest_path.write_text(good)
    with (tmp_path / "classifier.joblib").open("ab") as f:
        f.write(b"tampered")
    with pytest.raises(ConfigError, match="sha256"):
        TaskClassifier.load(tmp_path)


def test_label_mapping_covers_the_taxonomy() -> None:
    assert set(TASK_MAP.values()) == set(TASK_TAXONOMY)
    df = load_task_labels(DEFAULT_LABELS, max_per_group=5)
    assert set(df["label"]) == set(TASK_TAXONOMY)
    assert df.groupby(["source", "task_type"]).size().max() <= 5


def test_training_pipeline_writes_the_artifact(tmp_path: Path) -> None:
    emb = HashingEmbedder(dim=256)
    report = train_task_classifier(DEFAULT_LABELS, tmp_path, embedder=emb, max_per_group=10)
    assert {"classifier.joblib", "manifest.json", "report.json"} <= {p.name for p in tmp_path.iterdir()}
    assert set(report["per_class"]) == set(TASK_TAXONOMY)
    loaded = TaskClassifier.load(tmp_path, embedder_name=emb.name, embedder_dim=256)
    assert loaded.predict_proba(emb.embed(["hello"])).shape == (1, len(TASK_TAXONOMY))


def test_fit_from_log_arrays() -> None:
    X, y = _blobs(np.random.default_rng(2))
    clf = fit_from_arrays(X.astype(np.float16), list(y), embedder_name="blobs")
    assert clf.manifest_["embedder"] == {"name": "blobs", "dim": 16}
    assert (clf.predict(X) == y).mean() > 0.95


def test_heldout_accuracy_floor_on_real_prompts() -> None:
    """A small real subset, real MiniLM embeddings: held-out accuracy must clear a floor."""
    from sklearn.model_selection import train_test_split

    df = load_task_labels(DEFAULT_LABELS, max_per_group=14, seed=1)  # ~340 prompts, 11 classes
    emb = MiniLMEmbedder(long_strategy="truncate", max_tokens=64)  # short windows keep the test quick
    X = emb.embed(df["prompt"].tolist())
    y = df["label"].to_numpy()
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.4, stratify=y, random_state=0)
    rep = TaskClassifier().fit(X_tr, y_tr).report(X_te, y_te)
    # The majority class is ~17% of the data; over split seeds this setup scores 0.62-0.70 accuracy.
    assert rep["accuracy"] >= 0.55, rep["accuracy"]
    assert rep["macro_f1"] >= 0.45, rep["macro_f1"]


def test_shipped_classifier_on_clear_prompts() -> None:
    emb = MiniLMEmbedder()
    clf = TaskClassifier.load(SHIPPED, embedder_name=emb.name, embedder_dim=emb.dim)
    assert set(clf.classes_) == set(TASK_TAXONOMY)
    prompts = {
        "Write a Python function that returns the n-th Fibonacci number.": "code",
        "Solve for x: 3x + 5 = 20.": "math",
        "Translate 'good morning, how are you?' into Spanish.": "translation",
        "Write a short poem about the sea at night.": "creative_writing",
        "Give me ten ideas for a team-building day.": "brainstorming",
        "hey! how's it going?": "chat",
    }
    pred = clf.predict(emb.embed(list(prompts)))
    hits = sum(p == want for p, want in zip(pred, prompts.values(), strict=True))
    assert hits >= 5, dict(zip(prompts.values(), pred, strict=True))
    report = json.loads((SHIPPED / "report.json").read_text())
    assert report["accuracy"] >= 0.75 and report["n"] >= 500
