"""``learned-router bench``: all the work and printing, so that the CLI only calls :func:`bench_command`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from learned_router.bench.result import write_decisions
from learned_router.bench.run import run_bench

__all__ = ["bench_command"]


def bench_command(dataset_dir: str | Path, mode: str = "offline", json_out: str | Path | None = None,
                  json_print: bool = False, decisions_out: str | Path | None = None, plot: str | Path | None = None,
                  seed: int = 0, embedder: str = "minilm", *, points: int = 64,
                  cache_dir: str | Path | None = "out/cache", max_dim: int | None = None) -> int:
    """Run the benchmark, print a rich table (or JSON with ``json_print``) and write the requested files.

    Returns 0. A bad dataset folder or option prints the problem on stderr and exits with status 2.
    """
    from rich.console import Console

    err = Console(stderr=True)
    # The package logs to a NullHandler (a library must not print); here, a command, its warnings about the
    # dataset (rows left out or merged, a cache that cannot be written) go to stderr for the run.
    shown = logging.StreamHandler(sys.stderr)
    shown.setLevel(logging.WARNING)
    shown.setFormatter(logging.Formatter("warning: %(message)s"))
    package = logging.getLogger("learned_router")
    package.addHandler(shown)
    try:
        result = run_bench(dataset_dir, mode=mode, seed=seed, embedder=embedder, points=points,
                           progress=not json_print and sys.stderr.isatty(), cache_dir=cache_dir, max_dim=max_dim)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from exc
    finally:
        package.removeHandler(shown)
    payload = result.to_dict()
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(payload, indent=1))
    if decisions_out is not None:
        write_decisions(result, decisions_out)
    if plot is not None:
        from learned_router.bench.plot import plot_result

        plot_result(result, plot)
    if json_print:
        print(json.dumps(payload, indent=1))
    else:
        from learned_router.reporting import table_console

        console = table_console()
        from learned_router.bench.report import render_tables

        for table in render_tables(result):
            console.print(table)
        for label, path in (("results", json_out), ("decisions", decisions_out), ("plot", plot)):
            if path is not None:
                console.print(f"{label}: {path}")
    return 0
