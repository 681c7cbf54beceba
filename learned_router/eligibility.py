"""Which arms may serve a request, and why each other arm may not. Pure: reads state, changes nothing.

Runs *before* the strategy, so a logged propensity is the probability of the chosen arm among the arms that
were actually offered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from learned_router.config import ProviderConfig
from learned_router.stats import ArmStats
from learned_router.strategies.base import ArmView, Features
from learned_router.types import ArmId, ChatRequest, arm_id

__all__ = ["EligibilityRules", "estimate_cost_usd", "filter_arms"]


@dataclass(frozen=True, slots=True)
class EligibilityRules:
    availability_threshold: float = 0.95
    availability_min_calls: int = 10


def estimate_cost_usd(p: ProviderConfig, input_tokens: int, output_tokens: int) -> float:
    """Predicted cost of one call from the configured prices (USD per million tokens)."""
    return (input_tokens * p.price_in_per_mtok + output_tokens * p.price_out_per_mtok) / 1e6


def filter_arms(
    providers: Sequence[ProviderConfig],
    request: ChatRequest,
    features: Features,
    stats: Mapping[str, ArmStats],
    *,
    now: float,
    rules: EligibilityRules,
    breaker_available: Callable[[str], bool],
    budget_reason: Callable[[str, float], str | None],
    pinned: set[str] | None = None,
) -> tuple[list[ArmView], dict[ArmId, str]]:
    """Split ``providers`` into eligible arms (as ArmViews) and excluded arms with their reason.

    Args:
        stats: live metrics per arm.
        now: the monotonic time, for cool-downs.
        breaker_available: arm → whether its breaker would let a call through now.
        budget_reason: (provider name, estimated cost) → None, or why the provider's budget refuses it.
        pinned: when given, only these arms (or provider names) may serve.
    """
    eligible: list[ArmView] = []
    excluded: dict[ArmId, str] = {}
    for p in providers:
        arm = arm_id(p.name, p.model)
        s = stats[arm]
        out_tokens = min(request.max_tokens or features.output_tokens_est, p.max_output_tokens)
        cost = estimate_cost_usd(p, features.input_tokens, out_tokens)
        reason = None
        if pinned is not None and arm not in pinned and p.name not in pinned:
            reason = f"the request names another model ({request.model})"
        elif request.region is not None and p.region != request.region:
            reason = f"region {p.region or 'unset'} does not satisfy the required region {request.region}"
        elif features.input_tokens + out_tokens > p.max_context_tokens:
            reason = (f"context window {p.max_context_tokens} tokens is smaller than the request "
                      f"(~{features.input_tokens} in + {out_tokens} out)")
        elif request.max_cost_usd is not None and cost > request.max_cost_usd:
            reason = f"estimated cost ${cost:.6f} exceeds the request's ceiling ${request.max_cost_usd:.6f}"
        elif not breaker_available(arm):
            reason = "circuit breaker open"
        elif s.cooldown_until > now:
            reason = f"rate limited by the provider; retry after {s.cooldown_until - now:.1f}s"
        elif s.availability < rules.availability_threshold and s.calls >= rules.availability_min_calls:
            reason = f"availability {s.availability:.3f} below threshold {rules.availability_threshold}"
        else:
            reason = budget_reason(p.name, cost)
        if reason is not None:
            excluded[arm] = reason
            continue
        eligible.append(ArmView(arm=arm, provider=p, quality=s.quality, latency_s=s.latency_s,
                                availability=s.availability, in_flight=s.in_flight, est_cost_usd=cost))
    return eligible, excluded
