"""Train the learned routing policy from a decision log, evaluate it off-policy, and version it.

Usage::

    python training/train.py --log LOG --out models/NAME [--tracking-uri URI] [--seed N]
    python training/train.py --from-dataset DIR --logging-policy uniform --out models/NAME [--log LOG]

Steps: read the log (embeddings come from the log, nothing is re-embedded) → split off a held-out share by
a hash of the request id → fit a Thompson policy on the rest → estimate on the held-out decisions, with
IPS, SNIPS and doubly robust estimators, the value of the new policy, of every rule strategy and of the
current champion, next to the logging policy's observed value → refit the policy (and the task classifier,
where logged task labels exist) on every decision → write ``models/NAME/<version>/`` (``policy/``,
``classifier/``, ``manifest.json``, ``report.json``, ``ope.png``) → log everything to MLflow, register
the version, and move the ``champion`` alias only when the new version's lower confidence bound on utility
(doubly robust) beats the champion's estimate on the same traffic and that traffic's observed utility.
The policy's width and prior precision are cross-validated on the log (``training/fitting.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from training.fitting import choose_hyperparameters, fit_classifier, fit_policy
from training.logdata import LogError, LoggedData, load_logged
from training.policy_eval import (
    METRICS,
    evaluate_policy,
    observed_values,
    rule_probabilities,
    ts_probabilities,
)

__all__ = ["LogError", "main", "parse_args", "train"]

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="learned-router train", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("input")
    src.add_argument("--log", type=Path,
                     help="decision log (SQLite file or postgresql:// URL); with --from-dataset, where to write it")
    src.add_argument("--from-dataset", type=Path, help="simulate logged traffic from a routing dataset folder")
    src.add_argument("--logging-policy", default="uniform", help="logging policy for --from-dataset")
    src.add_argument("--n-decisions", type=int, default=None, help="simulated decisions (default: one per prompt)")
    src.add_argument("--embedder", default="hashing",
                     help="embedder for --from-dataset: hashing, static, minilm (serve with the same embedder.kind)")
    src.add_argument("--since", type=float, default=None, help="only decisions at or after this Unix time")
    p.add_argument("--out", type=Path, required=True, help="model folder, e.g. models/NAME")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=float, default=0.2, help="share of decisions held out for evaluation")
    p.add_argument("--min-decisions", type=int, default=200, help="refuse to train on fewer usable decisions")
    p.add_argument("--n-components", type=int, default=None,
                   help="PCA dimensions of the embedding (default: chosen by cross-validation)")
    p.add_argument("--alpha", type=float, default=None,
                   help="prior precision of the per-arm models (default: chosen by cross-validation)")
    p.add_argument("--max-dim", type=int, default=45,
                   help="widest context vector the policy may use; route() cost grows with its square "
                        "(45 dims route in 30-45 µs)")
    p.add_argument("--scale", type=float, default=0.3, help="exploration scale of Thompson draws")
    p.add_argument("--n-draws", type=int, default=500, help="Monte-Carlo draws for target propensities")
    trk = p.add_argument_group("tracking")
    trk.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///<project>/mlflow.db)")
    trk.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    trk.add_argument("--registry-name", default="learned-router")
    trk.add_argument("--experiment", default="learned-router")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    args = p.parse_args(argv)
    if args.log is None and args.from_dataset is None:
        p.error("give --log LOG or --from-dataset DIR")
    if not 0 < args.holdout < 1:
        p.error("--holdout must be between 0 and 1")
    return args


class _Progress:
    def __init__(self, quiet: bool) -> None:
        self._p: Any = None
        if not quiet:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                               TimeElapsedColumn(), console=Console(stderr=True))

    def __enter__(self) -> _Progress:
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.stop()

    def task(self, description: str, total: float | None) -> Any:
        return None if self._p is None else self._p.add_task(description, total=total)

    def update(self, task: Any, **kw: Any) -> None:
        if self._p is not None and task is not None:
            self._p.update(task, **kw)


def _next_version(out: Path) -> str:
    existing = [int(p.name[1:]) for p in out.glob("v[0-9]*") if p.is_dir() and p.name[1:].isdigit()]
    return f"v{max(existing, default=0) + 1:04d}"


def _simulate(args: argparse.Namespace, progress: _Progress) -> Path:
    from learned_router.embedders import make_embedder
    from learned_router.stores import SqliteDecisionLog
    from training.simulate import simulate_into

    path = args.log or (args.out / "simulated-log.db")
    if path.exists():
        raise LogError(f"{path} already exists; pass another --log to simulate into")
    task = progress.task(f"simulating {args.logging_policy} traffic", args.n_decisions)
    with SqliteDecisionLog(path) as store:
        simulate_into(store, args.from_dataset, policy=args.logging_policy, n=args.n_decisions, seed=args.seed,
                      embedder=make_embedder(args.embedder), cache_dir=ROOT / "out" / "cache",
                      on_progress=lambda d, t: progress.update(task, completed=d, total=t))
    return path


def _read(args: argparse.Namespace, log_path: Path, progress: _Progress) -> LoggedData:
    from learned_router.stores import describe_log, open_log_path

    try:
        store = open_log_path(log_path)
    except (FileNotFoundError, ConnectionError) as exc:
        raise LogError(str(exc)) from None
    try:
        total = store.count(kinds=["decision"])
        if total == 0:
            raise LogError(f"the decision log {describe_log(log_path)} holds no decisions")
        task = progress.task("reading the log", total)
        data = load_logged(store.scan(since=args.since), on_progress=lambda i: progress.update(task, completed=i))
        progress.update(task, completed=total)
    finally:
        store.close()
    if data.n < args.min_decisions:
        raise LogError(f"only {data.n} usable decisions (skipped: {data.skipped or 'none'}); need at least "
                       f"{args.min_decisions} (--min-decisions)")
    if int(data.has_quality.sum()) < max(20, args.min_decisions // 4):
        raise LogError(f"only {int(data.has_quality.sum())} of {data.n} decisions have quality feedback; the policy "
                       "learns from quality, send feedback (router.feedback / POST /v1/feedback) first")
    return data


def _champion(tracker: Any, out: Path) -> tuple[Any, dict[str, Any] | None]:
    """The champion's policy (or None) and its record, from the registry, else ``out/champion.json``."""
    from learned_router.errors import PolicyStateError
    from learned_router.strategies.thompson import ThompsonStrategy

    info, folder = None, None
    try:
        info = tracker.champion()
        folder = tracker.champion_dir() if info else None
    except (FileNotFoundError, OSError):
        folder = None
    local = out / "champion.json"
    if folder is None and local.is_file():
        info = json.loads(local.read_text())
        folder = out / info["version"]
    if folder is None:
        return None, info
    try:
        return ThompsonStrategy.load(Path(folder) / "policy"), info
    except PolicyStateError:
        return None, info


def _metrics(report: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for policy, per_metric in report["policies"].items():
        for metric, ests in per_metric.items():
            for name, e in ests.items():
                flat[f"ope.{policy}.{metric}.{name}"] = e["value"]
                flat[f"ope.{policy}.{metric}.{name}.ci_low"] = e["ci_low"]
                flat[f"ope.{policy}.{metric}.{name}.ci_high"] = e["ci_high"]
    for metric, v in report["logging_policy"].items():
        if v:
            flat[f"observed.{metric}"] = v["value"]
    for label, row in ((report.get("classifier") or {}).get("per_class") or {}).items():
        for key in ("precision", "recall", "f1"):
            if key in row:
                flat[f"classifier.{label}.{key}"] = row[key]
    for key in ("accuracy", "macro_f1", "ece"):
        if key in (report.get("classifier") or {}):
            flat[f"classifier.{key}"] = report["classifier"][key]
    return flat


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [p for p, m in report["policies"].items() if m.get("utility", {}).get("dr")]
    vals = [report["policies"][p]["utility"]["dr"] for p in names]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.errorbar([v["value"] for v in vals], range(len(names)),
                xerr=[[v["value"] - v["ci_low"] for v in vals], [v["ci_high"] - v["value"] for v in vals]], fmt="o")
    obs = report["logging_policy"].get("utility")
    if obs:
        ax.axvline(obs["value"], linestyle="--", color="grey", label="logging policy (observed)")
        ax.legend()
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("estimated utility per request (doubly robust, 95% interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run training as described in the module docstring; returns the report (also written to disk)."""
    from learned_router.stores import describe_log
    from learned_router.strategies import RULES
    from training.tracking import MlflowTracker, NullTracker, default_tracking_uri, promotion_decision

    t0 = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tracker: Any = NullTracker() if args.no_tracking else MlflowTracker(
        args.tracking_uri or default_tracking_uri(ROOT), experiment=args.experiment, registry_name=args.registry_name)
    with _Progress(args.quiet) as progress:
        log_path = _simulate(args, progress) if args.from_dataset is not None else args.log
        data = _read(args, log_path, progress)
        version = _next_version(out)
        vdir = out / version
        held = data.holdout_mask(args.holdout, args.seed)
        train_rows, test_rows = np.flatnonzero(~held), np.flatnonzero(held)
        if int(data.has_quality[test_rows].sum()) < 20 or len(train_rows) < 20:
            raise LogError(f"too few decisions to hold out {args.holdout:.0%} for evaluation; log more traffic")
        task = progress.task("fitting and evaluating", 5 + len(RULES))
        rng = np.random.default_rng(args.seed)
        try:
            hyper = choose_hyperparameters(data, train_rows, n_components=args.n_components, alpha=args.alpha,
                                           max_dim=args.max_dim, seed=args.seed)
        except ValueError as exc:
            raise LogError(f"--max-dim: {exc}") from None
        candidate = fit_policy(data, train_rows, hyper, scale=args.scale, version=version)
        probs, q_hat = ts_probabilities(candidate, data, test_rows, rng, n_draws=args.n_draws)
        policies = {"learned": evaluate_policy(probs, data, test_rows, q_hat)}
        progress.update(task, advance=1)
        for rule in RULES:
            policies[rule] = evaluate_policy(rule_probabilities(rule, data, test_rows, ~held), data, test_rows, q_hat)
            progress.update(task, advance=1)
        with tracker:
            champ_policy, champ_info = _champion(tracker, out)
            champion_estimate = None
            if champ_policy is not None and champ_policy.embedder and data.embedder \
                    and champ_policy.embedder != data.embedder:
                champ_policy = None  # trained on another embedder: not comparable on this log
            if champ_policy is not None:
                try:
                    cprobs, _ = ts_probabilities(champ_policy, data, test_rows, rng, n_draws=args.n_draws)
                    policies["champion"] = evaluate_policy(cprobs, data, test_rows, q_hat)
                    champion_estimate = policies["champion"]["utility"]["dr"]["value"]
                except ValueError:  # the champion was trained on another embedder
                    champ_policy = None
            if champion_estimate is None and champ_info:
                raw = (champ_info.get("tags") or champ_info).get("ope_utility_dr")
                champion_estimate = None if raw is None else float(raw)
            progress.update(task, advance=1)
            final = fit_policy(data, np.arange(data.n), hyper, scale=args.scale, version=version)
            final.save(vdir / "policy", extra={"trained_on": data.n, "arms_order": data.arms})
            classifier = fit_classifier(data, train_rows, test_rows, vdir / "classifier")
            progress.update(task, advance=1)
            new = policies["learned"]["utility"].get("dr", {})
            observed = observed_values(data, test_rows)
            promote, why = promotion_decision(new.get("ci_low"), champion_estimate,
                                              serving_value=(observed.get("utility") or {}).get("value"))
            report = {
                "version": version, "seed": args.seed, "log": describe_log(log_path), "n_decisions": data.n,
                "n_with_quality": int(data.has_quality.sum()), "n_train": int(len(train_rows)),
                "n_holdout": int(len(test_rows)), "skipped": data.skipped, "arms": data.arms,
                "hyperparameters": hyper | {"dim": int(final.model.dim)},
                "logging_policies": dict(data.policies), "logging_policy": observed,
                "policies": policies, "classifier": classifier, "metrics": list(METRICS),
                "champion": {"previous": champ_info, "estimate": champion_estimate},
                "promotion": {"promoted": promote, "reason": why},
            }
            (vdir / "report.json").write_text(json.dumps(report, indent=2, default=str))
            _plot(report, vdir / "ope.png")
            files = {str(p.relative_to(vdir)): _sha(p) for p in sorted(vdir.rglob("*")) if p.is_file()}
            manifest = {"kind": "learned-router-model", "format_version": 1, "version": version, "seed": args.seed,
                        "log": describe_log(log_path), "n_decisions": data.n, "arms": data.arms,
                        "embedding_dim": int(data.embeddings.shape[1]), "task_labels": data.task_labels,
                        "hyperparameters": report["hyperparameters"],
                        "ope_utility_dr": new, "promotion": report["promotion"], "files": files,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (vdir / "manifest.json").write_text(json.dumps(manifest, indent=2))
            tracker.log_params({k: v for k, v in vars(args).items()} | {"version": version, "n_decisions": data.n}
                               | {f"selected.{k}": v for k, v in report["hyperparameters"].items()})
            tracker.log_metrics(_metrics(report) | {"promoted": float(promote)})
            tracker.log_artifacts(vdir)
            registered = tracker.register(vdir, {"ope_utility_dr": new.get("value"),
                                                 "ope_utility_dr_ci_low": new.get("ci_low"), "local_version": version})
            report["registry_version"] = registered
            if promote:
                tracker.promote(registered)
                (out / "champion.json").write_text(json.dumps({"version": version, "registry_version": registered,
                                                               "ope_utility_dr": new.get("value")}, indent=2))
        progress.update(task, advance=2)
    report["elapsed_s"] = round(time.perf_counter() - t0, 2)
    (vdir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _summary(report: dict[str, Any]) -> None:
    from rich.table import Table

    from learned_router.reporting import table_console

    con = table_console()
    table = Table(title=f"Off-policy estimates on {report['n_holdout']} held-out decisions (95% intervals)")
    for col in ("policy", "utility (DR)", "quality (DR)", "cost USD (DR)", "latency s (DR)"):
        table.add_column(col)

    def cell(e: dict[str, Any]) -> str:
        d = e.get("dr") or e.get("snips")
        return "-" if not d else f"{d['value']:.4f} [{d['ci_low']:.4f}, {d['ci_high']:.4f}]" + (" !" if d["warnings"] else "")

    obs = report["logging_policy"]
    table.add_row("logging (observed)", *(f"{obs[m]['value']:.4f}" if obs.get(m) else "-" for m in METRICS))
    for name, per in report["policies"].items():
        table.add_row(name, *(cell(per.get(m, {})) for m in METRICS))
    con.print(table)
    h = report["hyperparameters"]
    how = ("as given" if h["chosen_by"] == "arguments" else f"chosen by {h['chosen_by']}"
           + ("" if h["cv_value"] is None else f", held-out value of its decisions {h['cv_value']:.4f}"))
    con.print(f"policy: {h['n_components']} PCA components, {h['n_clusters']} clusters, {h['dim']} dimensions, "
              f"prior precision {h['alpha']:g} ({how})")
    promo = report["promotion"]
    con.print(f"version {report['version']} ({report['n_decisions']} decisions, {report['elapsed_s']} s): "
              f"{'promoted to champion' if promo['promoted'] else 'not promoted'} ({promo['reason']})")


def _quiet_mlflow() -> None:
    """MLflow's own INFO lines, download bars and a type-hint warning would bury the report."""
    import logging
    import os
    import warnings

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
    warnings.filterwarnings("ignore", message=".*Passing a Python object as `python_model`.*")


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (2 for an unusable log)."""
    args = parse_args(argv)
    _quiet_mlflow()
    try:
        report = train(args)
    except LogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        _summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
