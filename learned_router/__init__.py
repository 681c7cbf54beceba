"""learned-router: send each LLM request to the provider and model with the best quality/cost/latency
trade-off for that request, keep serving when providers fail, and learn from the traffic."""

from __future__ import annotations

import logging

from learned_router.config import RouterConfig, load_config
from learned_router.errors import (
    AllAttemptsFailedError,
    BudgetExceededError,
    CircuitOpenError,
    ConfigError,
    ContextLengthExceeded,
    NoEligibleArmError,
    NotFittedError,
    PolicyStateError,
    ProviderError,
    ProviderRejected,
    ProviderResponseError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestError,
    RouterError,
)
from learned_router.router import AsyncRouter, Router
from learned_router.types import Attempt, ChatRequest, Completion, Decision, Outcome, Weights

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "AllAttemptsFailedError",
    "AsyncRouter",
    "Attempt",
    "BudgetExceededError",
    "ChatRequest",
    "CircuitOpenError",
    "Completion",
    "ConfigError",
    "ContextLengthExceeded",
    "Decision",
    "NoEligibleArmError",
    "NotFittedError",
    "Outcome",
    "PolicyStateError",
    "ProviderError",
    "ProviderRejected",
    "ProviderResponseError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RequestError",
    "Router",
    "RouterConfig",
    "RouterError",
    "Weights",
    "load_config",
]
