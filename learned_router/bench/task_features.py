"""Task features from a dataset's own task labels: the task classifier retrained on the train split.

A dataset may label each prompt with its source's category (MMLU's 57 subjects, MMLU-Pro's 14 domains). The
shipped task classifier knows a coarser taxonomy (code, math, knowledge QA...), and which model wins often
changes from one fine category to the next. So the benchmark does what ``learned-router train`` does with
logged traffic that carries task labels (``training/fitting.py``): it fits a
:class:`~learned_router.classifier.TaskClassifier` on the train prompts' embeddings and labels, and the
learned router reads its probabilities as context. Only the prompt is needed to predict them, so routing
a test prompt never reads its label.

The train rows get out-of-fold probabilities (each from a classifier that did not see that row), so that the
quality model learns how much to trust the classifier as it will be on unseen prompts, not on prompts it
has memorised.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from learned_router.bench.dataset import NO_TASK
from learned_router.classifier import TaskClassifier
from learned_router.strategies.selection import cv_folds

__all__ = ["MAX_CLASSES", "MIN_PER_CLASS", "dataset_task_classes", "dataset_task_probs"]

Array = NDArray[np.float64]

MIN_PER_CLASS = 10
"""Train prompts a label needs to be a class of its own; rarer labels are pooled into one ``other`` class."""

MAX_CLASSES = 64
"""The most frequent labels kept as classes (the rest pooled), which bounds the context width."""

_OTHER = "(other)"


def _labelled(tasks: NDArray[np.str_], train_rows: NDArray[np.int64]
              ) -> tuple[NDArray[np.int64], NDArray[np.str_], tuple[str, ...]]:
    """The labelled train rows, their labels (rare ones pooled) and the classes (() when fewer than two)."""
    y = np.asarray(tasks[train_rows]).astype(str)
    keep = y != NO_TASK  # a prompt without a label is classified, never learned from
    rows, y = train_rows[keep], y[keep]
    labels, counts = np.unique(y, return_counts=True)
    frequent = labels[counts >= MIN_PER_CLASS]
    if len(frequent) > MAX_CLASSES:
        frequent = labels[np.argsort(-counts, kind="stable")[:MAX_CLASSES]]
    if len(frequent) < 2:
        return rows, y, ()
    y = np.where(np.isin(y, frequent), y, _OTHER)
    return rows, y, tuple(str(c) for c in np.unique(y))


def dataset_task_classes(tasks: NDArray[np.str_], train_rows: NDArray[np.int64]) -> tuple[str, ...]:
    """The classes :func:`dataset_task_probs` would predict, without fitting anything (() when none)."""
    return _labelled(tasks, train_rows)[2]


def dataset_task_probs(
    embeddings: NDArray[np.float32], tasks: NDArray[np.str_], train_rows: NDArray[np.int64], *, seed: int = 0,
    n_folds: int = 3,
) -> tuple[Array | None, tuple[str, ...]]:
    """Probabilities of the dataset's task labels for every prompt, from a classifier of the train split.

    Returns (probabilities (n, C), class names), or (None, ()) when the train split has fewer than two labels
    with at least :data:`MIN_PER_CLASS` prompts each (no task column, one task, or a label per prompt).
    Labelled train rows get ``n_folds``-fold out-of-fold probabilities; every other row (test prompts, and
    train prompts without a label) those of a classifier fitted on all the labelled train rows.
    """
    train_rows, y, classes = _labelled(tasks, train_rows)
    if not classes:
        return None, ()
    col = {c: i for i, c in enumerate(classes)}
    P = np.zeros((len(embeddings), len(classes)))
    E_tr = embeddings[train_rows]

    def fill(rows: NDArray[np.int64], clf: TaskClassifier, X: NDArray[np.float32]) -> None:
        # a fold may lack a rare class: its column stays 0 for those rows
        P[np.ix_(rows, [col[c] for c in clf.labels_])] = clf.predict_proba(X)

    for fold in cv_folds(len(train_rows), max(2, n_folds), seed):
        fit_rows = np.setdiff1d(np.arange(len(train_rows)), fold)
        if len(np.unique(y[fit_rows])) < 2:
            continue  # (tiny train splits) those rows keep zeros, as for an unknown task
        fill(train_rows[fold], TaskClassifier(seed=seed).fit(E_tr[fit_rows], y[fit_rows]), E_tr[fold])
    rest = np.setdiff1d(np.arange(len(embeddings)), train_rows)
    if len(rest):
        fill(rest, TaskClassifier(seed=seed).fit(E_tr, y), embeddings[rest])
    return P, classes
