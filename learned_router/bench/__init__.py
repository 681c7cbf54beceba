"""Benchmarking routers on routing datasets (prompts × models outcome matrices): ``run_bench``."""

from __future__ import annotations

from learned_router.bench.result import BenchResult, RouterCurve, write_decisions
from learned_router.bench.run import MODES, run_bench

__all__ = ["MODES", "BenchResult", "RouterCurve", "run_bench", "write_decisions"]
