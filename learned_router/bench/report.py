"""The rich tables printed by ``learned-router bench``."""

from __future__ import annotations

from typing import Any

from learned_router.bench.result import BenchResult

__all__ = ["render_tables"]


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render_tables(result: BenchResult) -> list[Any]:
    """A summary table of every router (frontier metrics against the best single model) and the targets."""
    from rich.table import Table

    ref = result.reference
    two = len(result.models) == 2
    title = (f"{result.dataset}: {result.n_train} train / {result.n_test} test prompts, {len(result.models)} models; "
             f"best single model (train) {ref['best_model']}: quality {ref['best_quality']:.3f} at "
             f"${ref['best_cost_usd']:.6f}/prompt; oracle {ref['oracle_quality']:.3f}")
    table = Table(title=title, title_justify="left")
    for col in ("router", "points", "cost/prompt (USD)", "max quality", "quality @ best cost", "savings @100%",
                "@98%", "@95%", "oracle gap closed", "area", "≥ kNN"):
        table.add_column(col, justify="left" if col == "router" else "right")
    if two:
        for col in ("APGR", "CPT(50%)", "CPT(80%)"):
            table.add_column(col, justify="right")
    order = {"learned": 0, "knn": 1, "regression": 2, "oracle": 3, "rule": 4, "random": 5, "single": 6}
    routers = sorted(result.routers.values(), key=lambda r: (order.get(r.family, 9), r.name))
    for r in routers:
        m = r.metrics
        swept = len(r.cost) > 1
        cost = f"{min(r.cost):.2e}–{max(r.cost):.2e}" if swept else f"{r.cost[0]:.2e}"
        row = [r.name, str(len(r.cost)), cost, _num(m.get("max_quality")),
               _num(m.get("quality_at_best_cost")) if swept else "",
               _pct(m.get("savings_100")), _pct(m.get("savings_98")), _pct(m.get("savings_95")),
               _pct(m.get("gap_closed")) if swept else "", _num(m.get("area")) if swept else "",
               _pct(m.get("share_of_cost_range_at_or_above_knn"))]
        if two:
            row += [_num(m.get("apgr")), _pct(m.get("cpt50")), _pct(m.get("cpt80"))]
        table.add_row(*row, style="bold" if r.family == "learned" else None)
    targets = Table(title="targets", title_justify="left")
    targets.add_column("mode")
    targets.add_column("check")
    targets.add_column("value", justify="right")
    for mode, checks in result.targets.items():
        for key, value in checks.items():
            if isinstance(value, list):  # an interval; None at an end: not reached
                signed = "minus" in key  # a difference: show its sign
                shown = " to ".join("never" if v is None else f"{v:+.3f}" if signed else _num(v, 3)
                                    for v in value)
            else:
                shown = ("yes" if value else "NO") if isinstance(value, bool) else (
                    _num(value, 4) if isinstance(value, float) else str(value))
            targets.add_row(mode, key, shown)
    return [table, targets]
