"""Which arms may serve a request, and why each other arm may not. Pure: reads state, changes nothing.

Runs *before* the strategy, so a logged propensity is the probability of the chosen arm among the arms that
were actually offered.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from learned_router.config import ProviderConfig
from learned_router.stats import ArmStats
from learned_router.strategies.base import ArmView, Features
from learned_router.types import ArmId, ChatRequest

__all__ = ["EligibilityRules", "estimate_cost_usd", "filter_arms"]

_new_view = tuple.__new__


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
    breaker_refusing: Collection[str],
    budget_reason: Callable[[str, float], str | None] | None,
    pinned: set[str] | None = None,
    availability: Callable[[ArmStats, float], float] | None = None,
    arm_ids: Sequence[ArmId] | None = None,
) -> tuple[list[ArmView], dict[ArmId, str]]:
    """Split ``providers`` into eligible arms (as ArmViews) and excluded arms with their reason.

    Args:
        stats: live metrics per arm.
        now: the monotonic time, for cool-downs and availability healing.
        breaker_refusing: the arms whose breaker would not let a call through now
            (``CircuitBreaker.refusing``).
        budget_reason: (provider name, estimated cost) → None, or why the provider's budget refuses it;
            None when no provider has a budget.
        pinned: when given, only these arms (or provider names) may serve.
        availability: (stats, now) → current availability (``LiveStats.availability``); default: as stored.
        arm_ids: the arm id of each provider, precomputed (else built here).
    """
    eligible: list[ArmView] = []
    excluded: dict[ArmId, str] = {}
    in_tokens = features.input_tokens
    want_out = request.max_tokens or features.output_tokens_est
    # The expected answer length per arm: the request's estimate times what the arm's answers have really
    # been billed relative to it (LiveStats.out_ratio). A caller's max_tokens stays the (worst-case) length.
    fixed_out, est_out = request.max_tokens, features.output_tokens_est
    region = request.region
    ceiling = request.max_cost_usd
    ids = arm_ids if arm_ids is not None else [ArmId(f"{p.name}::{p.model}") for p in providers]
    for p, arm in zip(providers, ids, strict=True):
        s = stats[arm]
        out_tokens = want_out if want_out < p.max_output_tokens else p.max_output_tokens
        billed_out = out_tokens if fixed_out else min(est_out * s.out_ratio, p.max_output_tokens)
        cost = (in_tokens * p.price_in_per_mtok + billed_out * p.price_out_per_mtok) / 1e6
        avail = s.availability if availability is None or s.availability >= 1.0 else availability(s, now)
        reason = None
        if pinned is not None and arm not in pinned and p.name not in pinned:
            reason = f"the request names another model ({request.model})"
        elif region is not None and p.region != region:
            reason = f"region {p.region or 'unset'} does not satisfy the required region {region}"
        elif in_tokens + out_tokens > p.max_context_tokens:
            reason = (f"context window {p.max_context_tokens} tokens is smaller than the request "
                      f"(~{in_tokens} in + {out_tokens} out)")
        elif ceiling is not None and cost > ceiling:
            reason = f"estimated cost ${cost:.6f} exceeds the request's ceiling ${ceiling:.6f}"
        elif arm in breaker_refusing:
            reason = "circuit breaker open"
        elif s.cooldown_until > now:
            reason = f"rate limited by the provider; retry after {s.cooldown_until - now:.1f}s"
        elif avail < rules.availability_threshold and s.calls >= rules.availability_min_calls:
            reason = f"availability {avail:.3f} below threshold {rules.availability_threshold}"
        elif budget_reason is not None:
            reason = budget_reason(p.name, cost)
        if reason is not None:
            excluded[arm] = reason
            continue
        # tuple.__new__ skips the NamedTuple's generated __new__ frame: one view per arm per request
        eligible.append(_new_view(ArmView, (arm, p, s.quality, s.latency_s, avail, s.in_flight, cost)))
    return eligible, excluded
