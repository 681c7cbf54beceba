"""The result of a benchmark run: every router's frontier, its metrics, and the learned router's choices."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from learned_router.bench import metrics as M
from learned_router.bench.dataset import BenchDataset
from learned_router.bench.intervals import paired_knn_intervals, resample_weights, share_interval

__all__ = ["BenchResult", "RouterCurve", "summarise", "write_decisions"]


@dataclass
class RouterCurve:
    """One router's test-split points: one per trade-off setting (``w_cost``), or a single point."""

    name: str
    family: str  # single, random, oracle, rule, knn, regression, learned
    w_cost: list[float]
    cost: list[float]
    quality: list[float]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "w_cost": self.w_cost, "cost_usd": self.cost,
                "quality": self.quality, "metrics": self.metrics, **self.extra}


@dataclass
class BenchResult:
    """Everything a benchmark run measured. ``decisions[mode]`` is (points, test prompts) of model indices."""

    dataset: str
    modes: list[str]
    n_train: int
    n_test: int
    models: list[str]
    sweep: list[float]
    routers: dict[str, RouterCurve]
    decisions: dict[str, NDArray[np.int64]]
    test_prompt_ids: list[str]
    online_curve: dict[str, list[float]] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    # the baselines' test choices (e.g. kNN's), for the paired intervals
    baseline_decisions: dict[str, NDArray[np.int64]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the per-prompt decisions are written separately)."""
        return _clean({
            "dataset": self.dataset, "modes": self.modes, "n_train": self.n_train, "n_test": self.n_test,
            "models": self.models, "points": [{"point": i, "w_cost": w} for i, w in enumerate(self.sweep)],
            "cost_weight_unit": "quality per USD per 1,000 requests",
            "reference": self.reference, "routers": {k: v.to_dict() for k, v in self.routers.items()},
            "targets": self.targets, "online_learning_curve": self.online_curve,
            "hyperparameters": self.hyperparameters, "timings_s": self.timings, "settings": self.settings,
            "source": {k: self.meta.get(k) for k in ("source", "license", "cost_kind", "quality_kind")},
        })


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def summarise(result: BenchResult, data: BenchDataset, tr: NDArray[np.int64], te: NDArray[np.int64],
              predictions: dict[str, NDArray[np.float64]]) -> None:
    """Fill each router's metrics, the reference numbers and the target checks of ``result``."""
    Q_tr, Q_te, C_te = data.quality[tr], data.quality[te], data.cost_usd[te]
    train_mean = Q_tr.mean(axis=0)
    best = int(np.lexsort((data.cost_usd[tr].mean(axis=0), -train_mean))[0])
    cheapest = int(np.argmin(C_te.mean(axis=0)))
    ref = {
        "best_model": data.models[best], "best_cost_usd": float(C_te[:, best].mean()),
        "best_quality": float(Q_te[:, best].mean()), "oracle_quality": float(Q_te.max(axis=1).mean()),
        "cheapest_model": data.models[cheapest], "cheapest_cost_usd": float(C_te[:, cheapest].mean()),
        "cheapest_quality": float(Q_te[:, cheapest].mean()),
    }
    result.reference = ref
    lo, hi = ref["cheapest_cost_usd"], max(ref["best_cost_usd"], ref["cheapest_cost_usd"])
    for curve in result.routers.values():
        curve.metrics = M.router_metrics(
            curve.cost, curve.quality, best_cost=ref["best_cost_usd"], best_quality=ref["best_quality"],
            oracle_quality=ref["oracle_quality"], cost_lo=lo, cost_hi=hi,
            floor=(ref["cheapest_cost_usd"], ref["cheapest_quality"]))
    knn = result.routers.get("knn")
    if knn is not None:
        _, knn_vals = _grid_values(knn, lo, hi, ref)
        for curve in result.routers.values():
            if curve.w_cost:
                _, vals = _grid_values(curve, lo, hi, ref)
                curve.metrics["share_of_cost_range_at_or_above_knn"] = float((vals >= knn_vals - 1e-9).mean())
                curve.metrics["area_minus_knn"] = curve.metrics["area"] - knn.metrics["area"]
    if data.n_models == 2:
        _two_model_metrics(result, data, te, predictions, best)
    _utility(result, data, te)
    _targets(result)
    knn_choices = result.baseline_decisions.get("knn")
    W = resample_weights(len(te))
    for mode, choices in result.decisions.items():
        result.targets[mode].update(share_interval(choices, Q_te, C_te, best, W))
        if knn_choices is not None:
            result.targets[mode].update(paired_knn_intervals(
                choices, knn_choices, Q_te, C_te, W, best=best, cheapest=cheapest,
                q_hat=predictions.get(f"learned ({mode})"), knn_q_hat=predictions.get("knn")))


def _grid_values(curve: RouterCurve, lo: float, hi: float, ref: dict[str, Any]) -> tuple[float, NDArray[Any]]:
    fc, fq = M.frontier(curve.cost, curve.quality)
    return M.frontier_area(fc, fq, lo, hi, (ref["cheapest_cost_usd"], ref["cheapest_quality"]))


def _two_model_metrics(result: BenchResult, data: BenchDataset, te: NDArray[np.int64],
                       predictions: dict[str, NDArray[np.float64]], best: int) -> None:
    """RouteLLM's APGR and CPT(50%), CPT(80%): strong = the best model on the train split."""
    strong, weak = best, 1 - best
    Q_te = data.quality[te]
    for name, q_hat in predictions.items():
        share, pgr = M.pgr_curve(q_hat, Q_te, strong, weak)
        result.routers[name].metrics.update({
            "apgr": M.apgr(share, pgr), "cpt50": M.cpt(share, pgr, 0.5), "cpt80": M.cpt(share, pgr, 0.8)})
    for name, choices in result.decisions.items():  # online: from the swept choices themselves
        curve = result.routers[f"learned ({name})"]
        if "apgr" in curve.metrics:
            continue
        share = [float((ch == strong).mean()) for ch in choices]
        gap = Q_te[:, strong].mean() - Q_te[:, weak].mean()
        pts = sorted({(0.0, 0.0), (1.0, 1.0), *((s, (q - Q_te[:, weak].mean()) / gap)
                                               for s, q in zip(share, curve.quality, strict=True))})
        fs, fp = M.frontier([p[0] for p in pts], [p[1] for p in pts])
        grid = np.linspace(0, 1, 401)
        vals = np.array([M.quality_at(s, fs, fp) for s in grid])
        curve.metrics.update({"apgr": float(np.trapezoid(vals, grid)), "cpt50": M.cost_to_reach(0.5, fs, fp),
                              "cpt80": M.cost_to_reach(0.8, fs, fp)})


def _utility(result: BenchResult, data: BenchDataset, te: NDArray[np.int64]) -> None:
    """Mean test utility q - w_cost · (USD per 1,000 requests) per setting, and each learned mode's share
    of the offline router's utility gain over random routing."""
    Q, C = data.quality[te], data.cost_usd[te] * 1000.0
    ws = np.asarray(result.sweep)
    rand = np.array([float((Q - w * C).mean()) for w in ws])
    idx = np.arange(len(te))
    util: dict[str, NDArray[np.float64]] = {}
    for mode, choices in result.decisions.items():
        util[mode] = np.array([float((Q[idx, ch] - w * C[idx, ch]).mean()) for w, ch in zip(ws, choices, strict=True)])
        result.routers[f"learned ({mode})"].extra["utility"] = util[mode].tolist()
    if "offline" in util:
        keep = ws >= 0  # negative weights (two-model sweeps) pay for quality: not a utility to compare
        gain = float((util["offline"] - rand)[keep].sum())
        for mode, u in util.items():
            share = float((u - rand)[keep].sum()) / gain if abs(gain) > 1e-12 else None
            result.routers[f"learned ({mode})"].metrics["utility_share_of_offline"] = share


def _targets(result: BenchResult) -> None:
    out: dict[str, Any] = {}
    knn = result.routers.get("knn")
    for mode in result.modes:
        cur = result.routers[f"learned ({mode})"].metrics
        t: dict[str, Any] = {}
        if knn is not None:
            t["frontier_at_or_above_knn"] = cur["area"] >= knn.metrics["area"] - 1e-9
            t["area"], t["knn_area"] = cur["area"], knn.metrics["area"]
        s100 = cur.get("savings_100")
        t["best_quality_at_<=60%_cost"] = s100 is not None and s100 >= 0.4
        t["cost_share_for_best_quality"] = None if s100 is None else 1.0 - s100
        if "apgr" in cur and knn is not None:
            t["apgr"], t["knn_apgr"] = cur["apgr"], knn.metrics.get("apgr")
            t["cpt50"], t["knn_cpt50"] = cur["cpt50"], knn.metrics.get("cpt50")
            t["apgr_and_cpt50_at_least_knn"] = (knn.metrics.get("apgr") is not None
                                                and cur["apgr"] >= knn.metrics["apgr"] - 1e-9
                                                and (cur["cpt50"] or 1.0) <= (knn.metrics.get("cpt50") or 1.0) + 1e-9)
        if mode != "offline" and cur.get("utility_share_of_offline") is not None:
            t["utility_share_of_offline"] = cur["utility_share_of_offline"]
            t["utility_>=90%_of_offline"] = cur["utility_share_of_offline"] >= 0.9
        out[mode] = t
    result.targets = out


def write_decisions(result: BenchResult, path: str | Path, mode: str | None = None) -> Path:
    """Write the learned router's test choices: one row per (trade-off point, test prompt) with ``point``,
    ``prompt_id`` and ``model`` (named as in models.json). Parquet when the path ends in ``.parquet``, else
    JSON lines. ``mode`` defaults to offline when it was run, else the first mode."""
    mode = mode or ("offline" if "offline" in result.decisions else result.modes[0])
    choices = result.decisions[mode]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_pts, n = choices.shape
    point = np.repeat(np.arange(n_pts), n)
    pids = np.tile(np.asarray(result.test_prompt_ids, dtype=object), n_pts)
    models = np.asarray(result.models, dtype=object)[choices.reshape(-1)]
    if out.suffix == ".parquet":
        import pandas as pd

        pd.DataFrame({"point": point, "prompt_id": pids, "model": models}).to_parquet(out, index=False)
    else:
        with out.open("w") as fh:
            for p, pid, m in zip(point.tolist(), pids.tolist(), models.tolist(), strict=True):
                fh.write(json.dumps({"point": p, "prompt_id": pid, "model": m}) + "\n")
    return out
