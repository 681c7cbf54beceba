"""Terminal rendering (rich) of decisions and analytics reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from learned_router.types import Decision

__all__ = ["print_decision", "print_report", "report_table"]


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


def report_table(data: Mapping[str, Any]) -> Table:
    table = Table(title=f"{data.get('requests', 0)} requests, {data.get('failed_requests', 0)} failed, "
                        f"${data.get('total_cost_usd', 0.0):.4f} total")
    for col in ("provider", "attempts", "ok", "errors (by kind)", "cost $", "$/req", "p50 ms", "p95 ms",
                "p99 ms", "trips", "breaker"):
        table.add_column(col, justify="left" if col in ("provider", "errors (by kind)", "breaker") else "right")

    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.0f}"

    for row in data.get("providers", []):
        kinds = ", ".join(f"{k}:{n}" for k, n in row.get("errors_by_kind", {}).items())
        table.add_row(
            row["arm"], str(row["requests"]), str(row["successes"]),
            f"{row['errors']}" + (f" ({kinds})" if kinds else ""), f"{row['total_cost_usd']:.5f}",
            f"{row['cost_per_request_usd']:.6f}", ms(row["latency_p50_ms"]), ms(row["latency_p95_ms"]),
            ms(row["latency_p99_ms"]), str(row["breaker_trips"]), row.get("breaker_state") or "-",
        )
    return table


def print_report(data: Mapping[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(report_table(data))
