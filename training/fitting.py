"""Fitting the policy and the task classifier on logged decisions.

The policy's hyper-parameters (PCA components, cluster memberships, prior precision ``alpha``) are chosen by
cross-validation on the training decisions unless given, within the widest context the router may use
(``max_dim``: route() cost grows with the square of the width). Candidates are scored by the held-out value
of the decisions they would make (self-normalised importance weighting with the logged propensities and
each decision's own utility weights), not by their squared error: see ``LoggedValue``.

Each arm's prior mean quality is its logged mean, shrunk towards the overall mean in proportion to how
little the arm was served: with a strong prior precision a shared prior would erase the differences between
arms, and a raw mean of three decisions is noise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from learned_router.strategies.selection import (
    ALPHA_GRID,
    CLUSTERS_GRID,
    COMPONENTS_GRID,
    LoggedValue,
    Selection,
    TrainInputs,
    select,
)
from training.logdata import LoggedData

__all__ = ["COMPONENTS", "PRIOR_STRENGTH", "arm_priors", "choose_hyperparameters", "fit_classifier",
           "fit_policy", "logged_value", "train_inputs", "usable_rows"]

PRIOR_STRENGTH = 5.0  # pseudo-decisions at the overall mean quality added to each arm's prior
COMPONENTS = (8, *COMPONENTS_GRID)  # PCA widths tried (max_dim bounds them: 8 to 32 with task probabilities)


def usable_rows(data: LoggedData, rows: NDArray[np.int64]) -> NDArray[np.int64]:
    """The rows among ``rows`` that a policy can learn from: quality known, an arm served."""
    return rows[data.has_quality[rows] & (data.served[rows] >= 0)]


def arm_priors(data: LoggedData, rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Prior mean quality per arm (``data.arms`` order) from the usable decisions among ``rows``."""
    use = usable_rows(data, rows)
    overall = float(np.mean(data.quality[use])) if len(use) else 0.5
    k = len(data.arms)
    n = np.bincount(data.served[use], minlength=k).astype(np.float64)
    total = np.bincount(data.served[use], weights=data.quality[use], minlength=k)
    return (total + PRIOR_STRENGTH * overall) / (n + PRIOR_STRENGTH)


def train_inputs(data: LoggedData, use: NDArray[np.int64]) -> TrainInputs:
    """The policy's inputs (embedding, tokens, task probabilities) for the rows ``use``."""
    tp = data.task_probs[use] if data.task_labels else None
    return TrainInputs(data.embeddings[use], data.input_tokens[use], tp, tuple(data.task_labels))


def logged_value(data: LoggedData, use: NDArray[np.int64]) -> LoggedValue:
    """The decisions' scoring inputs for the usable rows ``use`` (as the policy evaluation sees them)."""
    w = data.weights[use]
    offsets = -w[:, 1:2] * data.filled_est_cost()[use] * 1000.0 - w[:, 2:3] * data.arm_latency()[None, :]
    offsets[~data.eligible[use]] = -np.inf
    return LoggedValue(w[:, 0], offsets, data.action[use], data.propensity[use], data.utility()[use])


def choose_hyperparameters(data: LoggedData, rows: NDArray[np.int64], *, n_components: int | None,
                           alpha: float | None, max_dim: int | None, seed: int) -> dict[str, Any]:
    """The policy's hyper-parameters: the given ones, the rest cross-validated on ``rows``. Returns
    ``n_components``, ``n_clusters``, ``alpha``, ``cv_error`` (mean squared error of the served arm's quality),
    ``cv_value`` (held-out utility of the chosen candidate's decisions; both None when nothing was chosen) and
    ``chosen_by``. Raises ValueError when ``max_dim`` is too narrow."""
    if n_components is not None and alpha is not None:
        return {"n_components": n_components, "n_clusters": 0, "alpha": alpha, "cv_error": None,
                "cv_value": None, "chosen_by": "arguments"}
    use = usable_rows(data, rows)
    sel: Selection = select(
        train_inputs(data, use), data.quality[use], arm_priors(data, rows), arms=data.served[use],
        components=(n_components,) if n_components is not None else COMPONENTS,
        clusters=(0,) if n_components is not None else CLUSTERS_GRID,
        alphas=(alpha,) if alpha is not None else ALPHA_GRID, seed=seed, max_dim=max_dim,
        value=logged_value(data, use))
    # no candidate's decisions ever matched a logged one: the squared error chose (see selection.select)
    how = "cross-validation" if sel.cv_value is not None else "cross-validation of the squared error"
    return asdict(sel) | {"chosen_by": how}


def fit_policy(data: LoggedData, rows: NDArray[np.int64], hyper: dict[str, Any], *, scale: float,
               version: str) -> Any:
    """A Thompson policy fitted on the usable decisions among ``rows`` with ``hyper``."""
    from learned_router.strategies.thompson import fit_thompson

    use = usable_rows(data, rows)
    priors = dict(zip(data.arms, arm_priors(data, rows).tolist(), strict=True))
    policy = fit_thompson(data.embeddings[use], data.input_tokens[use], data.arms, data.served[use],
                          data.quality[use], task_probs=data.task_probs[use] if data.task_labels else None,
                          task_labels=data.task_labels, priors=priors, n_components=int(hyper["n_components"]),
                          n_clusters=int(hyper["n_clusters"]), alpha=float(hyper["alpha"]), scale=scale,
                          version=version)
    policy.embedder = data.embedder or ""  # the serving router checks it against its own embedder
    return policy


def fit_classifier(data: LoggedData, train_rows: NDArray[np.int64], test_rows: NDArray[np.int64],
                   folder: Path) -> dict | None:
    """Retrain the task classifier on the logged task labels (classes with 5+ examples); save it in
    ``folder`` and return its held-out report, or None when fewer than two classes qualify."""
    from learned_router.classifier import TaskClassifier

    labelled = np.array([lbl is not None for lbl in data.task_label])
    tr, te = train_rows[labelled[train_rows]], test_rows[labelled[test_rows]]
    counts = Counter(data.task_label[i] for i in tr)
    if len([c for c in counts.values() if c >= 5]) < 2:
        return None
    keep = np.array([counts[data.task_label[i]] >= 5 for i in tr], dtype=bool)
    y = [data.task_label[i] for i in tr[keep]]
    clf = TaskClassifier(seed=0).fit(data.embeddings[tr[keep]], y, embedder_name=data.embedder or "")
    te = te[[data.task_label[i] in counts and counts[data.task_label[i]] >= 5 for i in te]] if len(te) else te
    report = clf.report(data.embeddings[te], [data.task_label[i] for i in te]) if len(te) else {}
    clf.save(folder)
    return report
