"""The terminal side of ``learned-router demo``: the introduction, the live view (a progress bar and a table
of traffic share, live quality and breaker state per provider), events as they happen, and the closing
report. Only ``learned_router.demo`` uses it."""

from __future__ import annotations

from collections import Counter, deque
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["LiveView"]

_RECENT = 40
_STATE_STYLE = {"closed": "green", "open": "bold red", "half_open": "yellow"}


class LiveView:
    """Collects what happens during a demo run and shows it.

    Args:
        console: where to print.
        router: the demo's Router (read for live quality, latency and breaker states).
        fleet: the SimFleet (for prices and models).
        total: requests to send.
        failing: the provider that will fail.
        live: redraw a live view; when False only events and the final report are printed.
    """

    def __init__(self, console: Console, router: Any, fleet: Any, *, total: int, failing: str,
                 live: bool = True) -> None:
        self.console = console
        self.router = router
        self.fleet = fleet
        self.total = total
        self.failing = failing
        self.arms = {name: f"{name}::{p.model}" for name, p in fleet.profiles.items()}
        self.events: list[tuple[float, str, str]] = []  # (t, provider, "opened" | "closed")
        self.outage_window: list[float] = []
        self.served_by: Counter[str] = Counter()
        self.judged: Counter[str] = Counter()  # provider → sum of judged quality
        self.recent: deque[str] = deque(maxlen=_RECENT)
        self.failovers = 0
        self.failed = 0
        self.done = 0
        self.cost = 0.0
        self._breaker = {arm: ("closed", 0) for arm in self.arms.values()}
        self._declared: dict[str, float] = {}
        self._progress = Progress(TextColumn("[bold]routing sample prompts"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self._task = self._progress.add_task("requests", total=total)
        self._live = (Live(self._render(), console=console, refresh_per_second=8, transient=True)
                      if live else None)
        self._t = 0.0

    # -- before -----------------------------------------------------------------------------------------
    def intro(self, cfg: dict[str, Any], outage_from: int, outage_to: int, timings: Any) -> None:
        c = self.console
        c.print("[bold]learned-router demo[/]: five simulated providers on 127.0.0.1 "
                "(no API key, nothing leaves this machine)\n")
        table = Table("provider", "model", "$ in / out per 1M tok", "base latency", "declared strengths",
                      "declared quality", title="providers (as configured)", title_justify="left")
        for p in cfg["providers"]:
            self._declared[p["name"]] = p["quality_prior"]
            prof = self.fleet.profiles[p["name"]]
            tasks = sorted(p.get("tasks", {}).items(), key=lambda kv: -kv[1])
            strengths = ", ".join(task for task, q in tasks if q >= 0.85) or "-"
            table.add_row(p["name"], p["model"], f"{p['price_in_per_mtok']:g} / {p['price_out_per_mtok']:g}",
                          f"~{prof.latency_s * 1000:.0f} ms", strengths, f"{p['quality_prior']:.2f}")
        c.print(table)
        c.print(f"strategy [bold]{cfg['routing']['strategy']}[/] with each prompt's task as a hint; a judge "
                "scores every answer (the simulator's true quality) and sends it back with "
                "router.feedback().")
        if outage_from < outage_to:
            c.print(f"scenario: [bold]{self.failing}[/] answers HTTP 500 for requests {outage_from + 1}-"
                    f"{outage_to}, then recovers. Breaker: opens after {timings.breaker_failures} "
                    f"consecutive failures, probes every {timings.breaker_reset_s:g} s.")
        c.print("scenario: [bold]budget[/]'s vendor claims quality 0.90 on every task; the judge's scores "
                "will say otherwise.\n")

    # -- during -----------------------------------------------------------------------------------------
    def __enter__(self) -> LiveView:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self.console.print(self._render())

    def _event(self, t: float, text: str) -> None:
        self.console.print(f"[dim]{t:6.1f}s[/]  {text}")

    def outage(self, on: bool, t: float) -> None:
        self.outage_window.append(round(t, 3))
        if on:
            self._event(t, f"[bold red]>> {self.failing} starts failing[/] (every call answers HTTP 500)")
        else:
            self._event(t, f"[bold green]>> {self.failing} is healthy again[/] "
                           "(the router does not know yet)")

    def served(self, s: Any) -> None:
        self.done += 1
        self._progress.update(self._task, completed=self.done)
        if s.provider is None:
            self.failed += 1
            self._event(s.t, f"[red]request {s.index + 1} failed: {s.error}[/]")
            return
        self.served_by[s.provider] += 1
        self.judged[s.provider] += s.quality or 0.0
        self.recent.append(s.provider)
        self.cost += s.cost_usd
        if s.failed_over_from:
            self.failovers += 1
            self._event(s.t, f"failover: request {s.index + 1} ({s.task}) got an error from "
                             f"{', '.join(s.failed_over_from)}, served by [bold]{s.provider}[/]")

    def tick(self, t: float) -> None:
        """Look for breaker transitions and redraw."""
        self._t = t
        for name, arm in self.arms.items():
            snap = self.router.breaker.snapshot(arm)
            state = self.router.breaker.state(arm)
            before, trips = self._breaker[arm]
            if snap.trips > trips:
                if before == "closed":
                    self._event(t, f"[bold red]breaker of {name} opened[/] after "
                                   f"{self.router.breaker.failure_threshold} consecutive failures; its "
                                   "traffic goes to the next provider in each ranking")
                else:
                    self._event(t, f"[red]breaker of {name} opened again[/]: the probe request failed")
                self.events.append((t, name, "opened"))
            elif state == "closed" and before != "closed":
                self._event(t, f"[bold green]{name} recovered[/]: a probe request succeeded, breaker closed")
                self.events.append((t, name, "closed"))
            self._breaker[arm] = (state, snap.trips)
        self._check_quality(t)
        if self._live is not None:
            self._live.update(self._render())

    def _check_quality(self, t: float) -> None:
        """Say once when the judge's scores pull a provider well below the quality it was declared with."""
        stats = self.router.stats.snapshot()
        for name, arm in self.arms.items():
            declared = self._declared.get(name)
            live = stats[arm].quality
            n = self.served_by[name]
            if declared is not None and n and live <= declared - 0.1:
                mean = self.judged[name] / n
                self._event(t, f"[yellow]judge: {name}'s answers score {mean:.2f} on average, not the "
                               f"declared {declared:.2f}[/]; after {n} answer{'s' if n > 1 else ''} its live "
                               f"quality is {live:.2f} and it ranks lower")
                del self._declared[name]

    def _render(self) -> Group:
        table = Table("provider", "share (all)", f"share (last {_RECENT})", "live quality", "avg latency",
                      "errors", "breaker", title_justify="left")
        stats = self.router.stats.snapshot()
        errors = {row["arm"]: row["errors"] for row in self.router.analytics.report().get("providers", [])}
        served = max(1, sum(self.served_by.values()))
        recent = Counter(self.recent)
        for name, arm in self.arms.items():
            s = stats[arm]
            state = self.router.breaker.state(arm)
            table.add_row(
                name, f"{100 * self.served_by[name] / served:5.1f}%",
                f"{100 * recent[name] / max(1, len(self.recent)):5.1f}%", f"{s.quality:.3f}",
                f"{s.latency_s * 1000:.0f} ms", str(errors.get(arm, 0)),
                f"[{_STATE_STYLE.get(state, 'white')}]{state}[/]",
            )
        line = (f"served {sum(self.served_by.values())}, failed {self.failed}, failovers {self.failovers}, "
                f"cost ${self.cost:.4f}")
        return Group(self._progress, table, line)

    # -- after ------------------------------------------------------------------------------------------
    def live_quality(self) -> dict[str, float]:
        """Provider → the router's live quality estimate now (its prior moved by the judge's feedback)."""
        stats = self.router.stats.snapshot()
        return {name: round(stats[arm].quality, 4) for name, arm in self.arms.items()}

    def finish(self, report: dict[str, Any], png: Path, report_path: Path, log_path: Path | None) -> int:
        from learned_router.reporting import print_report

        c = self.console
        demo = report["demo"]
        c.print()
        print_report(report, c)
        c.print(f"mean judged quality {demo['mean_quality']}, total cost ${demo['total_cost_usd']:.4f}, "
                f"{demo['failovers']} failovers, {demo['elapsed_s']:.1f} s")
        during, other = demo.get("during_outage"), demo.get("outside_outage")
        if during and other and during["requests"] and other["requests"]:
            first, last = demo["outage_requests"]
            c.print(f"requests {first + 1}-{last} (sent during the outage): mean quality "
                    f"{during['mean_quality']:.3f} vs {other['mean_quality']:.3f} for the others; cost per "
                    f"1,000 requests ${during['cost_per_1k_usd']:.3f} vs ${other['cost_per_1k_usd']:.3f}")
        mine = [e for e in demo["breaker_events"] if e["provider"] == self.failing]
        opened = [e["t"] for e in mine if e["event"] == "opened"]
        closed = [e["t"] for e in mine if e["event"] == "closed"]
        if opened:
            state = self.router.breaker.state(self.arms[self.failing])
            tail = (f"closed {closed[-1] - opened[0]:.1f} s after it first opened"
                    if state == "closed" and closed else f"[red]{state} now[/]")
            c.print(f"breaker of {self.failing}: opened {len(opened)} time(s) (first after "
                    f"{self.router.breaker.failure_threshold} failures, then after each failed probe), "
                    f"{tail}")
        elif demo["outage_requests"][0] < demo["outage_requests"][1]:
            c.print(f"[yellow]the breaker of {self.failing} never opened: too few of its requests fell in "
                    "the outage to reach the failure threshold (run with more --requests)[/]")
        c.print(f"\nplot:   {png}\nreport: {report_path}")
        if log_path is not None:
            c.print(f"log:    {log_path}  (try: learned-router report --log {log_path})")
        if demo["failed"]:
            c.print(f"[red]{demo['failed']} request(s) failed[/]")
            return 1
        return 0
