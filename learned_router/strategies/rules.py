"""The rule strategies: cost, quality, latency, balanced and task.

Each is deterministic: the ranking is a sort, the first arm gets propensity 1. Ties break by arm name so a
decision is reproducible. A preferred region (``request.prefer_region``) ranks first among otherwise equal arms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from learned_router.strategies.base import ArmView, Context, Features, Ranking
from learned_router.types import ArmId

__all__ = ["BalancedStrategy", "CostStrategy", "LatencyStrategy", "QualityStrategy", "TaskStrategy", "arm_quality"]


def arm_quality(view: ArmView, features: Features) -> float:
    """Quality score of an arm for a request.

    Without a known task (or a ``tasks`` table) it is the live moving average, initialised from
    ``quality_prior``. With one, the configured per-task scores are blended by the task probabilities and
    shifted by how far the live average has moved from the prior, so feedback still shows a regression on a
    provider's own specialty."""
    if features.task_probs and view.provider.tasks:
        listed = {t: p for t, p in features.task_probs.items() if t in view.provider.tasks}
        mass = sum(listed.values())
        if mass > 0:
            task_q = sum(p * view.provider.tasks[t] for t, p in listed.items()) / mass
            drift = view.quality - view.provider.quality_prior
            return min(1.0, max(0.0, mass * (task_q + drift) + (1 - mass) * view.quality))
    return view.quality


def _rank(arms: Sequence[ArmView], ctx: Context, score: Callable[[ArmView], float], name: str,
          tier: Callable[[ArmView], int] = lambda a: 0) -> Ranking:
    """Sort by tier (lower first), then score (higher first), then preferred region, then name."""
    prefer = ctx.request.prefer_region
    scored = {a.arm: float(score(a)) for a in arms}
    order = sorted(
        arms,
        key=lambda a: (tier(a), -scored[a.arm], 0 if prefer and a.provider.region == prefer else 1, a.arm),
    )
    ranked = tuple(a.arm for a in order)
    props = dict.fromkeys(ranked, 0.0)
    props[ranked[0]] = 1.0
    return Ranking(arms=ranked, scores=scored, propensities=props, info={"strategy": name})


class _Rule:
    name = "rule"

    def update(self, arm: ArmId, features: Features, reward: float, *, cost_usd: float = 0.0,
               latency_s: float = 0.0, weight: float = 1.0) -> None:
        """Rule strategies learn nothing themselves; live metrics are kept by the router."""


class QualityStrategy(_Rule):
    """Highest quality score first."""

    name = "quality"

    def select(self, ctx: Context, arms: Sequence[ArmView], rng: np.random.Generator) -> Ranking:
        return _rank(arms, ctx, lambda a: arm_quality(a, ctx.features), self.name)


class LatencyStrategy(_Rule):
    """Lowest live latency first (moving average, initialised from ``latency_prior_s``)."""

    name = "latency"

    def select(self, ctx: Context, arms: Sequence[ArmView], rng: np.random.Generator) -> Ranking:
        return _rank(arms, ctx, lambda a: -a.latency_s, self.name)


class CostStrategy(_Rule):
    """Cheapest arm for this request whose quality score meets ``ctx.quality_threshold`` (0.8); arms below the
    threshold follow, best quality first. The score is minus the arm's estimated cost of the request
    (``ArmView.est_cost_usd``: its prices, the prompt's tokens and the answer length the arm really bills) for
    qualifying arms and the quality for the others."""

    name = "cost"

    def select(self, ctx: Context, arms: Sequence[ArmView], rng: np.random.Generator) -> Ranking:
        def qualifies(a: ArmView) -> bool:
            return arm_quality(a, ctx.features) >= ctx.quality_threshold

        def score(a: ArmView) -> float:
            return -a.est_cost_usd if qualifies(a) else arm_quality(a, ctx.features)

        return _rank(arms, ctx, score, self.name, tier=lambda a: 0 if qualifies(a) else 1)


def balanced_score(a: ArmView, features: Features, weights: tuple[float, float, float]) -> float:
    """quality·w_q + 1/(1 + price)·w_c + 1/(1 + latency in s)·w_l, where price is the blended list price in
    USD per million tokens (mean of input and output). Per million rather than per thousand tokens: at
    today's prices ($0.05-$75 per million) the cost term then spans most of (0, 1] instead of 0.96-1.0."""
    wq, wc, wl = weights
    return wq * arm_quality(a, features) + wc / (1.0 + a.price_per_1k_usd * 1000.0) + wl / (1.0 + a.latency_s)


class BalancedStrategy(_Rule):
    """Weighted score (0.4 quality, 0.3 cost, 0.3 latency by default; ``routing.balanced_weights``); see
    ``balanced_score``."""

    name = "balanced"

    def select(self, ctx: Context, arms: Sequence[ArmView], rng: np.random.Generator) -> Ranking:
        return _rank(arms, ctx, lambda a: balanced_score(a, ctx.features, ctx.balanced_weights), self.name)


class TaskStrategy(_Rule):
    """The providers preferred for the request's task (``routing.task_preferences``: task → provider
    names) lead the ranking, ordered by the balanced score; the rest follow by the same score. The task is
    the request's ``task_hint``, else the classifier's most probable task."""

    name = "task"

    def select(self, ctx: Context, arms: Sequence[ArmView], rng: np.random.Generator) -> Ranking:
        task = ctx.request.task_hint or ctx.features.task
        preferred = set(ctx.task_preferences.get(task, ())) if task else set()

        ranking = _rank(arms, ctx, lambda a: balanced_score(a, ctx.features, ctx.balanced_weights), self.name,
                        tier=lambda a: 0 if a.provider.name in preferred else 1)
        return Ranking(ranking.arms, ranking.scores, ranking.propensities, info={"strategy": self.name, "task": task})
