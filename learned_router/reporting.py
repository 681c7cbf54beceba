"""Terminal rendering (rich) of decisions and analytics reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from learned_router.types import Decision

__all__ = ["print_decision", "print_report", "report_lines", "table_console"]


def table_console(min_width: int = 160, **kwargs: object) -> Console:
    """A console for wide tables. Written to a pipe or a file (no terminal to fit), it is at least
    ``min_width`` columns wide, so numbers are never cut to ``…`` by rich's default of 80 columns."""
    console = Console(**kwargs)  # type: ignore[arg-type]
    if not console.is_terminal and console.width < min_width:
        console = Console(width=min_width, **kwargs)  # type: ignore[arg-type]
    return console


def print_decision(decision: Decision, console: Console | None = None) -> None:
    console = console or Console()
    head = f"[bold]{decision.provider}[/] / {decision.model}  (strategy: {decision.strategy})"
    if decision.fallback_reason:
        head += f"\n[yellow]fallback: {decision.fallback_reason}[/]"
    console.print(head)
    table = Table("rank", "arm", "score", "propensity", "est. cost $")
    for i, arm in enumerate(decision.ranking, 1):
        table.add_row(str(i), arm, f"{decision.scores.get(arm, 0.0):.4f}",
                      f"{decision.propensities.get(arm, 0.0):.3f}", f"{decision.est_cost_usd.get(arm, 0.0):.6f}")
    for arm, why in decision.excluded.items():
        table.add_row("-", f"[dim]{arm}[/]", "", "", f"[red]excluded: {why}[/]")
    console.print(table)


def report_lines(data: Mapping[str, Any]) -> list[str]:
    """Per-arm analytics as plain aligned text. Plain text rather than a rich Table: columns never get
    truncated on an 80-column terminal or in a pipe, and the output stays greppable."""
    live = any(row.get("breaker_state") for row in data.get("providers", []))
    head = ["arm", "calls", "ok", "err", "cost $", "$/call", "p50/95/99 ms", "trips"] + (["breaker"] if live else [])

    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.0f}"

    rows = []
    kinds = []
    for row in data.get("providers", []):
        if row.get("errors_by_kind"):
            kinds.append(f"{row['arm']}: " + ", ".join(f"{k}:{n}" for k, n in row["errors_by_kind"].items()))
        rows.append([row["arm"], str(row["requests"]), str(row["successes"]), str(row["errors"]),
                     f"{row['total_cost_usd']:.4f}", f"{row['cost_per_request_usd']:.6f}",
                     "/".join(ms(row[k]) for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")),
                     str(row["breaker_trips"])] + ([row.get("breaker_state") or "-"] if live else []))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 or i == 8 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"{data.get('requests', 0)} requests, {data.get('failed_requests', 0)} failed, "
           f"${data.get('total_cost_usd', 0.0):.4f} total", fmt(head), "-" * len(fmt(head))]
    out += [fmt(r) for r in rows]
    if kinds:
        out.append("errors by kind: " + "; ".join(kinds))
    return out


def print_report(data: Mapping[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    for line in report_lines(data):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
