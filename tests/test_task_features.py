"""The benchmark's task features from a dataset's own task labels (learned_router/bench/task_features.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_bench import _write_dataset

from learned_router.bench import run_bench
from learned_router.bench.dataset import NO_TASK
from learned_router.bench.task_features import MIN_PER_CLASS, dataset_task_probs
from learned_router.classifier import TaskClassifier
from learned_router.embedders import HashingEmbedder


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    E = rng.normal(size=(n, d)).astype(np.float32)
    return E / np.linalg.norm(E, axis=1, keepdims=True)


def test_labels_that_cannot_be_learned_give_no_features() -> None:
    rng = np.random.default_rng(0)
    E = _unit(rng, 100, 16)
    train = np.arange(70)
    assert dataset_task_probs(E, np.array(["gsm8k"] * 100), train) == (None, ())  # one task
    one_each = np.array([f"t{i}" for i in range(100)])
    assert dataset_task_probs(E, one_each, train) == (None, ())  # a label per prompt
    few = np.array(["a"] * (MIN_PER_CLASS - 1) + ["b"] * 91)
    assert dataset_task_probs(E, few, train) == (None, ())  # only one label is frequent enough


def test_rare_labels_are_pooled_and_held_out_prompts_are_classified_from_their_embedding() -> None:
    rng = np.random.default_rng(1)
    centres = _unit(rng, 3, 32)
    names = np.array(["code", "law", "rare"])
    y_idx = np.concatenate([rng.integers(0, 2, 290), [2] * 10])[rng.permutation(300)]
    E = centres[y_idx] + 0.05 * rng.normal(size=(300, 32)).astype(np.float32)
    tasks = names[y_idx]
    train = np.nonzero(np.arange(300) % 10 < 8)[0]
    assert (tasks[train] == "rare").sum() < MIN_PER_CLASS
    P, classes = dataset_task_probs(E, tasks, train)
    assert classes == ("(other)", "code", "law")
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-6)
    test = np.setdiff1d(np.arange(300), train)
    pooled = np.where(tasks == "rare", "(other)", tasks)
    assert (np.array(classes)[P[test].argmax(axis=1)] == pooled[test]).mean() > 0.95


def test_prompts_without_a_label_are_classified_not_learned_from() -> None:
    rng = np.random.default_rng(3)
    centres = _unit(rng, 2, 32)
    y_idx = rng.integers(0, 2, 200)
    E = centres[y_idx] + 0.05 * rng.normal(size=(200, 32)).astype(np.float32)
    tasks = np.where(np.arange(200) % 2 == 0, np.array(["code", "law"])[y_idx], NO_TASK)
    P, classes = dataset_task_probs(E, tasks, np.arange(150))
    assert classes == ("code", "law")  # the missing label is not a class
    unlabelled = np.nonzero(tasks == NO_TASK)[0]
    np.testing.assert_allclose(P[unlabelled].sum(axis=1), 1.0, atol=1e-6)
    assert (P[unlabelled].argmax(axis=1) == y_idx[unlabelled]).mean() > 0.95


def test_train_rows_get_out_of_fold_probabilities_not_memorised_ones() -> None:
    """With labels that carry no signal, a classifier scored on its own training rows is confidently right
    (it memorises them); the train rows' features must instead be as uncertain as on unseen prompts."""
    rng = np.random.default_rng(2)
    E = _unit(rng, 240, 384)
    tasks = np.array(["a", "b", "c"])[rng.integers(0, 3, 240)]
    train = np.arange(240)
    y_idx = np.searchsorted(["a", "b", "c"], tasks)
    in_sample = TaskClassifier(calibrate=False).fit(E, tasks).predict_proba(E)[np.arange(240), y_idx].mean()
    assert in_sample > 0.6  # what the features would be without folds: twice chance
    P, _ = dataset_task_probs(E, tasks, train)
    assert P[np.arange(240), y_idx].mean() < 0.4  # chance is 1/3


def test_the_bench_reads_the_train_labels_and_never_a_test_prompts_label(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "tasks", n=150)
    kwargs = {"mode": "offline", "points": 4, "embedder": HashingEmbedder(dim=32), "progress": False,
              "cache_dir": None}
    first = run_bench(root, **kwargs)
    assert first.hyperparameters["dataset_task_classes"] == ["easy", "hard", "medium"]
    prompts = pd.read_parquet(root / "prompts.parquet")
    test = prompts["split"] == "test"
    prompts.loc[test, "task"] = prompts.loc[test, "task"].sample(frac=1.0, random_state=0).to_numpy()[::-1]
    prompts.to_parquet(root / "prompts.parquet")
    again = run_bench(root, **kwargs)
    np.testing.assert_array_equal(first.decisions["offline"], again.decisions["offline"])


@pytest.mark.parametrize("column", ["missing", "one task"])
def test_the_bench_without_usable_labels_records_none(tmp_path: Path, column: str) -> None:
    root = _write_dataset(tmp_path / "plain", n=60)
    prompts = pd.read_parquet(root / "prompts.parquet")
    prompts = prompts.drop(columns=["task"]) if column == "missing" else prompts.assign(task="gsm8k")
    prompts.to_parquet(root / "prompts.parquet")
    result = run_bench(root, mode="offline", points=3, embedder=HashingEmbedder(dim=32), progress=False,
                       cache_dir=None)
    assert result.hyperparameters["dataset_task_classes"] == []


def test_task_classes_that_do_not_fit_max_dim_are_left_out(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "narrow", n=150)
    kwargs = {"mode": "offline", "points": 3, "embedder": HashingEmbedder(dim=32), "progress": False,
              "cache_dir": None}
    # bias + length + 3 task classes + the fewest PCA components (16) = 21 dimensions
    wide_enough = run_bench(root, max_dim=21, **kwargs)
    assert wide_enough.hyperparameters["dataset_task_classes"] == ["easy", "hard", "medium"]
    assert wide_enough.hyperparameters["offline"]["dim"] == 21
    too_narrow = run_bench(root, max_dim=20, **kwargs)
    assert too_narrow.hyperparameters["dataset_task_classes"] == []
    assert too_narrow.hyperparameters["offline"]["dim"] <= 20
