"""A/B experiments between policies: sticky assignment and the per-variant report.

**Assignment.** A request's unit (its session, tenant or the request itself, per ``ExperimentConfig.unit``)
is hashed with the experiment name into [0, 1) and mapped onto the cumulative variant weights, so a unit
always gets the same variant while the weights stay the same. A request without the configured unit (no
session id, no tenant) falls back to its request id, i.e. it is assigned per request. The probability of
the variant is logged with the decision (``assignment_p``).

**Report.** Per variant: requests, error rate, and the mean quality (requests with feedback), cost, latency
and utility (``quality - w_cost · cost_usd · 1000 - w_latency · latency_s``, with the weights logged with each
decision, else ``default_weights``), each with a 95% interval; the difference of each variant from the
control (the variant named ``control``, else the one with most traffic) with a Welch interval; and an
*always-valid* verdict from a normal-mixture sequential test (mSPRT, Johari et al. 2017): the
confidence sequence ``|d - delta| <= sqrt(V (V + tau²) / tau² · (2 log(1/alpha) + log((V + tau²) / V)))``
(V the variance of the difference ``d``) holds at every sample size simultaneously, so looking at the
report every day does not inflate the error rate. The always-valid p-value is the running minimum of
``1 / Lambda`` over checkpoints in time order.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from learned_router.config import ExperimentConfig
from learned_router.types import ChatRequest

__all__ = ["ab_report", "assign", "make_assigner", "msprt", "print_ab_report", "unit_key"]

METRICS = ("utility", "quality", "cost_usd", "latency_s")
_LOWER_IS_BETTER = {"cost_usd", "latency_s"}


# ---------------------------------------------------------------------------------------------- assignment
def unit_key(experiment: ExperimentConfig, request: ChatRequest) -> str:
    """The value hashed for ``request``: its session id, tenant or request id (per ``experiment.unit``)."""
    value = {"session": request.session_id, "tenant": request.tenant}.get(experiment.unit)
    return value if value else request.request_id


def assign(experiment: ExperimentConfig, key: str) -> tuple[str, float]:
    """The variant of unit ``key`` and its assignment probability (its weight share)."""
    digest = hashlib.sha256(f"{experiment.name}\x00{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    total = sum(v.weight for v in experiment.variants)
    edge = 0.0
    for variant in experiment.variants:
        edge += variant.weight / total
        if u < edge:
            return variant.name, variant.weight / total
    last = experiment.variants[-1]
    return last.name, last.weight / total


def make_assigner(experiments: Sequence[ExperimentConfig]) -> Callable[[ChatRequest], Any]:
    """A function request → ``planning.Assignment`` for the first enabled experiment (None when none)."""
    from learned_router.planning import Assignment

    active = [e for e in experiments if e.enabled]

    def assigner(request: ChatRequest) -> Assignment | None:
        for exp in active:
            name, p = assign(exp, unit_key(exp, request))
            strategy = next(v.strategy for v in exp.variants if v.name == name)
            return Assignment(experiment=exp.name, variant=name, probability=p, strategy=strategy)
        return None

    return assigner


# ---------------------------------------------------------------------------------------------- statistics
def _z(alpha: float) -> float:
    return NormalDist().inv_cdf(1 - alpha / 2)


def _summary(values: Sequence[float], alpha: float) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None, "sd": None}
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    half = _z(alpha) * sd / math.sqrt(len(x)) if len(x) > 1 else float("inf")
    return {"n": len(x), "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd}


def msprt(diff: float, variance: float, *, tau: float, alpha: float = 0.05) -> tuple[float, float]:
    """Mixture SPRT for a difference of means with variance ``variance`` under H0 (difference 0) and a
    N(0, tau²) mixture over alternatives. Returns (Lambda, half-width of the confidence sequence)."""
    if variance <= 0 or tau <= 0:
        return (math.inf if diff != 0 else 1.0), 0.0
    v, t2 = variance, tau * tau
    log_lam = 0.5 * math.log(v / (v + t2)) + t2 * diff * diff / (2 * v * (v + t2))
    half = math.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + math.log((v + t2) / v)))
    return math.exp(min(log_lam, 700.0)), half


def _sequential(a: list[tuple[float, float]], b: list[tuple[float, float]], alpha: float,
                tau: float | None, checkpoints: int = 40) -> dict[str, Any]:
    """Compare the time-ordered samples (ts, value) of a variant ``b`` with the control ``a``."""
    if len(a) < 2 or len(b) < 2:
        return {"p_value": None, "cs_low": None, "cs_high": None, "tau": tau}
    va, vb = np.array([v for _, v in a]), np.array([v for _, v in b])
    ta, tb = np.array([t for t, _ in a]), np.array([t for t, _ in b])
    pooled_sd = float(np.sqrt((va.var(ddof=1) + vb.var(ddof=1)) / 2)) or 1e-12
    tau_ = tau if tau is not None else 0.1 * pooled_sd
    times = np.unique(np.quantile(np.concatenate([ta, tb]), np.linspace(0, 1, checkpoints + 1)[1:]))
    p_value = 1.0
    for t in times:
        xa, xb = va[ta <= t], vb[tb <= t]
        if len(xa) < 2 or len(xb) < 2:
            continue
        var = xa.var(ddof=1) / len(xa) + xb.var(ddof=1) / len(xb)
        lam, _ = msprt(float(xb.mean() - xa.mean()), float(var), tau=tau_, alpha=alpha)
        p_value = min(p_value, 1.0 / lam if lam > 0 else 1.0)
    var = va.var(ddof=1) / len(va) + vb.var(ddof=1) / len(vb)
    d = float(vb.mean() - va.mean())
    _, half = msprt(d, float(var), tau=tau_, alpha=alpha)
    return {"p_value": p_value, "cs_low": d - half, "cs_high": d + half, "tau": tau_}


# ---------------------------------------------------------------------------------------------- report
def _utility(rec: Any, default: Mapping[str, float]) -> float | None:
    if rec.quality is None:
        return None
    w = rec.weights or default
    return float(w.get("quality", 1.0) * rec.quality - w.get("cost", 0.0) * rec.cost_usd * 1000.0
                 - w.get("latency", 0.0) * rec.latency_s)


def _collect(records: Iterable[Any], experiment: str | None,
             default_weights: Mapping[str, float]) -> dict[str, dict[str, dict[str, Any]]]:
    data: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for rec in records:
        if rec.experiment is None or rec.variant is None or (experiment is not None and rec.experiment != experiment):
            continue
        v = data[rec.experiment].setdefault(rec.variant, {"requests": 0, "errors": 0, "assignment_p": set(),
                                                           **{m: [] for m in METRICS}})
        v["requests"] += 1
        if rec.assignment_p is not None:
            v["assignment_p"].add(round(rec.assignment_p, 6))
        if rec.served_arm is None:
            v["errors"] += 1
            continue
        v["cost_usd"].append((rec.ts, rec.cost_usd))
        v["latency_s"].append((rec.ts, rec.latency_s))
        if rec.quality is not None:
            v["quality"].append((rec.ts, rec.quality))
            v["utility"].append((rec.ts, _utility(rec, default_weights)))
    return data


def _control(variants: Mapping[str, Mapping[str, Any]]) -> str:
    if "control" in variants:
        return "control"
    return max(sorted(variants), key=lambda name: variants[name]["requests"])


def ab_report(log: Any, experiment: str | None = None, *, alpha: float = 0.05, tau: float | None = None,
              default_weights: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The A/B report of a decision log (any store with ``scan(kinds=...)``) as a JSON-safe dict.

    Args:
        experiment: one experiment's name (default: every experiment in the log).
        alpha: 1 - confidence level of intervals and the sequential test.
        tau: standard deviation of the mSPRT mixture over effect sizes, in metric units
            (default: 0.1 × the pooled standard deviation of the metric).
        default_weights: trade-off weights for records logged without weights.

    Returns:
        ``{"alpha": ..., "experiments": {name: {"control": ..., "variants": {...}, "comparisons": {...}}}}``.
    """
    weights = dict(default_weights or {"quality": 1.0, "cost": 0.05, "latency": 0.05})
    data = _collect(log.scan(kinds=("decision",)), experiment, weights)
    out: dict[str, Any] = {"alpha": alpha, "default_weights": weights, "experiments": {}}
    for name in sorted(data):
        variants = data[name]
        control = _control(variants)
        vrep: dict[str, Any] = {}
        for vname in sorted(variants):
            v = variants[vname]
            vrep[vname] = {"requests": v["requests"], "errors": v["errors"],
                           "error_rate": v["errors"] / v["requests"] if v["requests"] else 0.0,
                           "assignment_p": sorted(v["assignment_p"]),
                           **{m: _summary([x for _, x in v[m]], alpha) for m in METRICS}}
        comps: dict[str, Any] = {}
        for vname in sorted(variants):
            if vname == control:
                continue
            comps[vname] = {m: _compare(variants[control][m], variants[vname][m], m, alpha, tau) for m in METRICS}
        out["experiments"][name] = {"control": control, "variants": vrep, "comparisons": comps}
    return out


def _compare(a: list[tuple[float, float]], b: list[tuple[float, float]], metric: str, alpha: float,
             tau: float | None) -> dict[str, Any]:
    sa, sb = _summary([x for _, x in a], alpha), _summary([x for _, x in b], alpha)
    res: dict[str, Any] = {"diff": None, "ci_low": None, "ci_high": None}
    if sa["n"] >= 2 and sb["n"] >= 2:
        d = sb["mean"] - sa["mean"]
        se = math.sqrt(sa["sd"] ** 2 / sa["n"] + sb["sd"] ** 2 / sb["n"])
        res = {"diff": d, "ci_low": d - _z(alpha) * se, "ci_high": d + _z(alpha) * se,
               "relative": d / sa["mean"] if sa["mean"] else None}
    seq = _sequential(a, b, alpha, tau)
    res["sequential"] = seq
    if seq["p_value"] is None:
        res["verdict"] = "not enough data"
    elif seq["cs_low"] > 0 or seq["cs_high"] < 0:
        better = (seq["cs_low"] > 0) != (metric in _LOWER_IS_BETTER)
        res["verdict"] = "variant better" if better else "control better"
    else:
        res["verdict"] = "inconclusive"
    return res


def print_ab_report(data: Mapping[str, Any], console: Any = None) -> None:
    """Render :func:`ab_report` output as rich tables."""
    from rich.table import Table

    from learned_router.reporting import table_console

    con = console or table_console()
    if not data.get("experiments"):
        con.print("No experiment traffic in this log.")
        return

    def fmt(s: Mapping[str, Any], digits: int = 4) -> str:
        if s.get("mean") is None:
            return "-"
        return f"{s['mean']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"

    level = f"{1 - float(data['alpha']):.0%}"
    for name, exp in data["experiments"].items():
        table = Table(title=f"Experiment {name} (control: {exp['control']}; {level} intervals)")
        for col in ("variant", "requests", "errors", "quality", "cost USD", "latency s", "utility"):
            table.add_column(col, justify="left" if col == "variant" else "right")
        for vname, v in exp["variants"].items():
            table.add_row(vname, str(v["requests"]), f"{v['error_rate']:.1%}", fmt(v["quality"]),
                          fmt(v["cost_usd"], 6), fmt(v["latency_s"], 3), fmt(v["utility"]))
        con.print(table)
        diff = Table(title=f"{name}: difference from {exp['control']} (always-valid verdict)")
        for col in ("variant", "metric", "difference", "always-valid interval", "p (always valid)", "verdict"):
            diff.add_column(col)
        for vname, comps in exp["comparisons"].items():
            for metric, c in comps.items():
                seq = c["sequential"]
                d = "-" if c["diff"] is None else f"{c['diff']:+.5f} [{c['ci_low']:+.5f}, {c['ci_high']:+.5f}]"
                cs = "-" if seq["cs_low"] is None else f"[{seq['cs_low']:+.5f}, {seq['cs_high']:+.5f}]"
                p = "-" if seq["p_value"] is None else f"{seq['p_value']:.4f}"
                diff.add_row(vname, metric, d, cs, p, c["verdict"])
        con.print(diff)
