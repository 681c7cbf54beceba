"""What a routing strategy (policy) sees and returns.

A strategy turns a ``Context`` and the eligible arms into a ``Ranking``. ``select`` never mutates learning
state; ``update`` is the only mutator. Rule strategies ignore ``update``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from learned_router.config import ProviderConfig
from learned_router.types import ArmId, ChatRequest, Weights

__all__ = ["ArmView", "Context", "Features", "Ranking", "Strategy"]


@dataclass(frozen=True, slots=True)
class Features:
    """What is known about a request before routing.

    ``embedding`` is the L2-normalised prompt embedding (None when no embedder is configured) and
    ``embedder`` the name of the embedder that made it (logged with it, so that training knows which
    embedder a policy is for); ``task_probs`` the classifier's task probabilities (empty when no classifier).
    """

    input_tokens: int
    output_tokens_est: int
    embedding: NDArray[np.float32] | None = None
    task_probs: Mapping[str, float] = field(default_factory=dict)
    embedder: str | None = None

    @property
    def task(self) -> str | None:
        if not self.task_probs:
            return None
        return max(self.task_probs.items(), key=lambda kv: kv[1])[0]


class ArmView(NamedTuple):
    """One eligible arm as a strategy sees it: its config plus live measurements.

    ``quality`` and ``latency_s`` are moving averages initialised from the priors; ``est_cost_usd`` is the
    predicted cost of this request on this arm. (A NamedTuple rather than a frozen dataclass: one is built
    per arm per request, and a tuple is built about three times faster.)
    """

    arm: ArmId
    provider: ProviderConfig
    quality: float
    latency_s: float
    availability: float
    in_flight: int
    est_cost_usd: float

    @property
    def price_per_1k_usd(self) -> float:
        """Blended price of 1k tokens (mean of input and output price), in USD."""
        return (self.provider.price_in_per_mtok + self.provider.price_out_per_mtok) / 2.0 / 1000.0


@dataclass(frozen=True, slots=True)
class Context:
    request: ChatRequest
    features: Features
    weights: Weights
    quality_threshold: float = 0.8
    balanced_weights: tuple[float, float, float] = (0.4, 0.3, 0.3)
    task_preferences: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ranking:
    """Ordered arms (failover order), a score per arm (higher is better), and the probability that each
    offered arm would have been ranked first (sums to 1 over the offered arms)."""

    arms: tuple[ArmId, ...]
    scores: Mapping[str, float]
    propensities: Mapping[str, float]
    info: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Strategy(Protocol):
    name: str

    def select(self, ctx: Context, arms: Sequence[ArmView], rng: np.random.Generator) -> Ranking: ...

    def update(self, arm: ArmId, features: Features, reward: float, *, cost_usd: float = 0.0,
               latency_s: float = 0.0, weight: float = 1.0) -> None: ...
