"""``run_bench``: train routers on a dataset's train split and score them on its test split.

Every router is run at the same trade-off settings (``w_cost``: quality per USD per 1,000 requests, 0 and
log-spaced values), giving a cost-quality frontier on the test split. Routing decisions use only the prompt
(its embedding, length and task probabilities) and what was learned from the train split; in online mode the
test outcomes arrive only as feedback after each choice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from learned_router.bench import learned as learned_mod
from learned_router.bench import routers as R
from learned_router.bench.dataset import BenchDataset, cached_embeddings, load_dataset, quality_range
from learned_router.bench.online import online_transform, run_online
from learned_router.bench.result import BenchResult, RouterCurve, summarise
from learned_router.bench.task_features import dataset_task_classes, dataset_task_probs
from learned_router.strategies.selection import narrowest_context

__all__ = ["MODES", "make_embedder", "run_bench", "sweep_weights"]

log = logging.getLogger(__name__)

MODES = ("offline", "bandit", "online")
# The online router learns from nothing: a small context, a prior worth a few observations, and posterior
# draws narrower than the Bernoulli noise so that exploring many arms does not cost too much. The prior and
# the draw scale are in units of the quality range (``dataset.quality_range``): 0.5 is its middle.
ONLINE = {"n_components": 16, "alpha": 5.0, "scale": 0.15, "prior": 0.5}
Array = NDArray[np.float64]
Progress = Callable[[str, float], None]


def make_embedder(name: str) -> Any:
    """The embedder for a registry name: ``minilm`` (all-MiniLM-L6-v2, default), ``static`` (distilled from
    MiniLM, no torch) or ``hashing`` (offline, fast, for tests). Raises ValueError for other names."""
    from learned_router.embedders import make_embedder as build

    kwargs: dict[str, Any] = {"cache_size": 0}
    if name == "minilm":
        kwargs["batch_size"] = 64
    return build(name, **kwargs)


def sweep_weights(mean_cost_1k: Array, points: int) -> Array:
    """Trade-off settings (quality per USD per 1,000 requests) from the models' mean predicted costs.

    0, then log-spaced weights from 'cost barely matters' (0.3% quality for the whole price range) to 'only
    cost matters' (3 quality units for the gap between the two cheapest models). With two models (the
    RouteLLM setting) a quarter of the points are negative weights, i.e. paying extra for the stronger
    model, so that the sweep reaches every share of strong-model calls from 0% to 100%.
    """
    c = np.sort(np.asarray(mean_cost_1k, dtype=np.float64))
    span = max(c[-1] - c[0], 1e-12)
    n_neg = max(points // 4, 1) if len(c) == 2 else 0
    lo = 0.003 / span
    gaps = np.diff(c)
    gap = gaps[gaps > span * 1e-3].min() if (gaps > span * 1e-3).any() else span
    hi = min(max(3.0 / gap, lo * 10), lo * 1e5)
    pos = np.concatenate([[0.0], np.logspace(np.log10(lo), np.log10(hi), max(points - n_neg - 1, 1))])
    if not n_neg:
        return pos
    return np.concatenate([-np.logspace(np.log10(1.0 / span), np.log10(lo), n_neg), pos])


def _task_probs(embeddings: NDArray[np.float32], embedder: Any, classifier_dir: Path | None
                ) -> tuple[Array | None, tuple[str, ...]]:
    """Task probabilities from the shipped task classifier when it matches the embedder, else none."""
    from learned_router.classifier import TaskClassifier
    from learned_router.errors import RouterError

    if classifier_dir is not None:
        candidates = [classifier_dir]
    else:
        from learned_router.planning import default_models_dir

        models = default_models_dir()
        candidates = [models / "task_classifier", models / "static_minilm" / "task_classifier"]
    clf = None
    for folder in candidates:
        try:
            clf = TaskClassifier.load(folder, embedder_name=embedder.name, embedder_dim=embedder.dim)
            break
        except (RouterError, OSError, ValueError) as exc:
            log.info("task classifier in %s not used: %s", folder, exc)
    if clf is None:
        return None, ()
    return np.asarray(clf.predict_proba(embeddings), dtype=np.float64), tuple(str(c) for c in clf.classes_)


def _points(choices: NDArray[np.int64], data: BenchDataset, rows: NDArray[np.int64]) -> tuple[list[float],
                                                                                                list[float]]:
    """(mean cost, mean quality) on ``rows`` for each row of ``choices`` (shape (P, len(rows)))."""
    idx = np.arange(len(rows))
    costs = [float(data.cost_usd[rows][idx, ch].mean()) for ch in choices]
    quals = [float(data.quality[rows][idx, ch].mean()) for ch in choices]
    return costs, quals


def _cheapest_best(quality: Array, cost: Array) -> NDArray[np.int64]:
    """Per row, the cheapest model, ties broken by higher quality."""
    score = cost - 1e-9 * quality * (np.abs(cost).max() + 1.0)
    return np.argmin(score, axis=1)


def _swept(q_hat: Array, c_hat: Array, ws: Array) -> NDArray[np.int64]:
    return np.stack([R.choose(q_hat, c_hat, float(w)) for w in ws])


def run_bench(dataset_dir: str | Path | BenchDataset, *, mode: str = "offline", points: int = 64,
              seed: int = 0, embedder: str | Any = "minilm", progress: bool | Progress = True,
              cache_dir: str | Path | None = "out/cache", classifier_dir: str | Path | None = None,
              max_dim: int | None = None, embeddings: NDArray[np.float32] | None = None) -> BenchResult:
    """Benchmark the learned router against the baselines on one dataset.

    Args:
        dataset_dir: a folder in the routing-dataset format (prompts/outcomes parquet, models.json), or a
            loaded dataset (e.g. ``BenchDataset.take`` of one: a subset of prompts or models).
        mode: ``offline``, ``bandit``, ``online`` or ``all``.
        points: trade-off settings in the sweep (0 plus log-spaced cost weights).
        seed: seed of the logging policy, the online stream and the CV folds.
        embedder: ``minilm``, ``hashing`` or an Embedder object.
        progress: True shows a rich progress bar; a callable ``(stage, fraction)`` receives progress.
        cache_dir: where prompt embeddings are cached (None: no cache).
        classifier_dir: the task classifier to use for task probabilities (default: models/task_classifier).
        max_dim: the widest context vector the offline and bandit learned routers may use (None: any the
            cross-validation picks); a serving policy's route() cost grows with the square of its width.
        embeddings: the prompts' embeddings by ``embedder``, when already computed (None: embed, cached).

    Raises:
        ValueError: unknown mode or embedder, or a folder that is not a routing dataset.
    """
    modes = list(MODES) if mode == "all" else [mode]
    if any(m not in MODES for m in modes):
        raise ValueError(f"unknown mode {mode!r}; use offline, bandit, online or all")
    started = time.perf_counter()
    data = dataset_dir if isinstance(dataset_dir, BenchDataset) else load_dataset(dataset_dir)
    emb_obj = make_embedder(embedder) if isinstance(embedder, str) else embedder
    ctx: AbstractContextManager[Progress]
    ctx = _rich_progress() if progress is True else nullcontext(progress or (lambda stage, frac: None))
    with ctx as report:
        report("embedding prompts", 0.0)
        E = embeddings if embeddings is not None else cached_embeddings(
            data, emb_obj, cache_dir, on_batch=lambda done, total: report("embedding prompts", done / total))
        T, labels = _task_probs(E, emb_obj, Path(classifier_dir) if classifier_dir else None)
        result = _bench(data, E, T, labels, modes, points, seed, report, max_dim)
    result.settings.update({"embedder": emb_obj.name, "seed": seed, "points": points,
                            "task_classifier": bool(labels), "max_dim": max_dim})
    result.timings["total_s"] = time.perf_counter() - started
    return result


def _bench(data: BenchDataset, E: NDArray[np.float32], T: Array | None, labels: tuple[str, ...],
           modes: list[str], points: int, seed: int, report: Progress, max_dim: int | None = None) -> BenchResult:
    tr, te = np.nonzero(data.is_train)[0], np.nonzero(~data.is_train)[0]
    if len(tr) < 4 or len(te) < 1:
        raise ValueError("the dataset needs at least 4 train and 1 test prompts")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    report("task features", 0.0)
    ds_labels = dataset_task_classes(data.tasks, tr)  # known before any fit, so a cut-off fits nothing
    P = None
    narrowest = narrowest_context(len(tr), E.shape[1], len(labels) + len(ds_labels))
    if ds_labels and max_dim is not None and narrowest > max_dim:
        log.info("the dataset's %d task classes do not fit in max_dim %d: left out", len(ds_labels), max_dim)
        ds_labels = ()
    elif ds_labels:  # the learned router also reads the dataset's own task labels (bench/task_features.py)
        P, ds_labels = dataset_task_probs(E, data.tasks, tr, seed=seed)
    if P is not None:
        T = P if T is None else np.hstack([T, P])
        labels = (*labels, *(f"dataset:{c}" for c in ds_labels))
    timings["task_features_s"] = time.perf_counter() - t0
    report("task features", 1.0)
    inputs = learned_mod.TrainInputs(E, data.input_tokens, T, labels)
    Q_tr, Q_te = data.quality[tr], data.quality[te]

    # shared cost prediction for the baselines: tokens per model from the train split
    report("baselines", 0.0)
    t0 = time.perf_counter()
    base_t = online_transform(E, data.input_tokens, tr)
    X_base = base_t.transform(E, data.input_tokens)
    tokens = R.TokenModel().fit_full(X_base[tr], data.output_tokens[tr])
    c_hat = R.predicted_cost_per_1k(data, te, tokens.predict(X_base[te]))
    c_hat_tr = R.predicted_cost_per_1k(data, tr, tokens.predict(X_base[tr]))
    q_low, q_span = quality_range(Q_tr)
    ws = sweep_weights(c_hat_tr.mean(axis=0), points) * q_span
    online = {**ONLINE, "prior": q_low + ONLINE["prior"] * q_span, "scale": ONLINE["scale"] * q_span}

    curves: dict[str, RouterCurve] = {}
    priors = Q_tr.mean(axis=0)
    for j, m in enumerate(data.models):
        curves[f"model:{m}"] = RouterCurve(f"model:{m}", "single", [], [float(data.cost_usd[te, j].mean())],
                                           [float(Q_te[:, j].mean())])
    curves["random"] = RouterCurve("random", "random", [], [float(data.cost_usd[te].mean())],
                                   [float(Q_te.mean())])
    true_c = data.cost_usd[te] * 1000.0
    # the oracle's frontier on a dense grid plus the cheapest model per prompt, so that it is exact enough
    # to dominate every router
    pos = ws[ws > 0]
    dense = np.unique(np.concatenate([[0.0], pos, np.logspace(np.log10(pos[0] / 100), np.log10(pos[-1] * 100), 200)]))
    cheapest = _cheapest_best(Q_te, true_c)
    oracle = np.vstack([_swept(Q_te, true_c, dense), cheapest[None, :]])
    curves["oracle"] = RouterCurve("oracle", "oracle", [*dense.tolist(), float("inf")], *_points(oracle, data, te))
    mean_tokens = data.output_tokens[tr].mean(axis=0)
    for name, j in R.rule_choices(data, priors, mean_tokens).items():
        curves[name] = RouterCurve(name, "rule", [], [float(data.cost_usd[te, j].mean())], [float(Q_te[:, j].mean())])
    report("baselines", 0.3)
    k = R.select_knn_k(E[tr], Q_tr)
    q_knn = R.knn_quality(E[tr], Q_tr, E[te], k)
    knn_choices = _swept(q_knn, c_hat, ws)
    curves["knn"] = RouterCurve("knn", "knn", ws.tolist(), *_points(knn_choices, data, te), extra={"k": k})
    report("baselines", 0.5)
    q_reg = R.regression_quality(E[tr], data.input_tokens[tr], Q_tr, E[te], data.input_tokens[te])
    curves["regression"] = RouterCurve("regression", "regression", ws.tolist(),
                                       *_points(_swept(q_reg, c_hat, ws), data, te))
    report("baselines", 1.0)
    timings["baselines_s"] = time.perf_counter() - t0
    predictions = {"knn": q_knn, "regression": q_reg}

    decisions: dict[str, NDArray[np.int64]] = {}
    online_curve: dict[str, list[float]] = {}
    hyper: dict[str, Any] = {"knn_k": k, "dataset_task_classes": list(ds_labels)}
    for m in modes:
        t0 = time.perf_counter()
        report(f"learned ({m})", 0.0)
        if m in ("offline", "bandit"):
            if m == "offline":
                fit = learned_mod.fit_offline(inputs.take(tr), Q_tr, data.output_tokens[tr], seed=seed,
                                              max_dim=max_dim)
            else:
                fit, _ = learned_mod.fit_bandit(inputs.take(tr), Q_tr, data.output_tokens[tr], seed=seed,
                                                max_dim=max_dim)
            test_in = inputs.take(te)
            q_hat = fit.predict_quality(test_in)
            own_c = R.predicted_cost_per_1k(data, te, fit.predict_tokens(test_in))
            choices = _swept(q_hat, own_c, ws)
            predictions[f"learned ({m})"] = q_hat
            hyper[m] = {"n_components": fit.n_components, "n_clusters": fit.n_clusters, "alpha": fit.alpha,
                        "cv_error": fit.cv_mse,
                        "dim": fit.model.dim}
        else:
            X = online_transform(E, data.input_tokens, tr, ONLINE["n_components"]).transform(E, data.input_tokens)
            rows = []
            mid = len(ws) // 2
            for p, w in enumerate(ws):
                run = run_online(data, X, tr, te, float(w), seed=seed + p, record_curve=p == mid,
                                 alpha=online["alpha"], scale=online["scale"], prior=online["prior"])
                rows.append(run.test_choices)
                if run.curve:
                    online_curve = run.curve
                report(f"learned ({m})", (p + 1) / len(ws))
            choices = np.stack(rows)
            hyper[m] = dict(online)
        name = f"learned ({m})"
        curves[name] = RouterCurve(name, "learned", ws.tolist(), *_points(choices, data, te))
        decisions[m] = choices
        timings[f"{m}_s"] = time.perf_counter() - t0
        report(f"learned ({m})", 1.0)

    result = BenchResult(dataset=data.name, modes=modes, n_train=len(tr), n_test=len(te), models=list(data.models),
                         sweep=ws.tolist(), routers=curves, decisions=decisions,
                         test_prompt_ids=data.prompt_ids[te].tolist(), online_curve=online_curve,
                         hyperparameters=hyper, timings=timings, meta=dict(data.meta),
                         baseline_decisions={"knn": knn_choices})
    summarise(result, data, tr, te, predictions)
    return result


def _rich_progress() -> AbstractContextManager[Progress]:
    from contextlib import contextmanager

    @contextmanager
    def bar() -> Any:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description:<22}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                      TimeElapsedColumn(), transient=False) as prog:
            tasks: dict[str, Any] = {}

            def report(stage: str, frac: float) -> None:
                if stage not in tasks:
                    tasks[stage] = prog.add_task(stage, total=1.0)
                prog.update(tasks[stage], completed=min(max(frac, 0.0), 1.0))

            yield report

    return bar()
