"""Routing strategies, chosen by name from ``RULES`` (the learned policy lives in ``thompson``)."""

from __future__ import annotations

from learned_router.strategies.base import ArmView, Context, Features, Ranking, Strategy
from learned_router.strategies.rules import (
    BalancedStrategy,
    CostStrategy,
    LatencyStrategy,
    QualityStrategy,
    TaskStrategy,
)

RULES: dict[str, type] = {
    "balanced": BalancedStrategy,
    "cost": CostStrategy,
    "latency": LatencyStrategy,
    "quality": QualityStrategy,
    "task": TaskStrategy,
}

__all__ = ["RULES", "ArmView", "Context", "Features", "Ranking", "Strategy"]
