"""The exception tree of learned-router.

::

    RouterError
    ├── ConfigError                 a config file or value is wrong; names the key and the problem
    ├── RequestError                a request is malformed (a 4xx at the gateway); also a ValueError
    ├── NotFittedError              a learned component was used before fit/load; also a ValueError
    ├── PolicyStateError            a saved policy state is corrupt or inconsistent
    ├── NoEligibleArmError          every provider was excluded; ``reasons`` maps each to why
    ├── BudgetExceededError         a tenant is over its spending cap
    ├── CircuitOpenError            a provider's breaker refused the call
    ├── AllAttemptsFailedError      every attempt failed; ``attempts`` lists them all
    └── ProviderError               one provider call failed (``provider``, ``model``, ``retryable``)
        ├── ProviderTimeout
        ├── ProviderUnavailable     transport errors, resets and 5xx
        ├── RateLimited             429, with ``retry_after_s``
        ├── ContextLengthExceeded   the prompt does not fit this model's context window
        ├── ProviderRejected        other 4xx
        └── ProviderResponseError   the body could not be parsed

``ProviderError.retryable`` says whether trying the same request on another provider makes sense.
Messages never contain API keys or prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learned_router.types import Attempt

__all__ = [
    "AllAttemptsFailedError",
    "BudgetExceededError",
    "CircuitOpenError",
    "ConfigError",
    "ContextLengthExceeded",
    "NoEligibleArmError",
    "NotFittedError",
    "PolicyStateError",
    "ProviderError",
    "ProviderRejected",
    "ProviderResponseError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RequestError",
    "RouterError",
]


class RouterError(Exception):
    """Base class of every error raised by learned-router."""


class ConfigError(RouterError):
    """A configuration problem. ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config error at '{key}': {problem}" if key else f"config error: {problem}")


class RequestError(RouterError, ValueError):
    """A malformed request. ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid request field '{field}': {problem}" if field else problem)


class NotFittedError(RouterError, ValueError):
    """A learned component was used before it was fitted or loaded."""


class PolicyStateError(RouterError):
    """A saved policy state is corrupt, of an unknown version, or does not match the configured arms."""


class NoEligibleArmError(RouterError):
    """No provider may serve this request. ``reasons`` maps each provider to why it was excluded."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self.reasons = dict(reasons)
        detail = "; ".join(f"{arm}: {why}" for arm, why in sorted(self.reasons.items())) or "no providers"
        super().__init__(f"no eligible provider for this request ({detail})")


class BudgetExceededError(RouterError):
    """A tenant's spending cap would be exceeded."""

    def __init__(self, scope: str, name: str, limit_usd: float, spent_usd: float, window: str) -> None:
        self.scope = scope
        self.name = name
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.window = window
        super().__init__(
            f"{scope} '{name}' is over its budget: ${spent_usd:.6f} spent or reserved of "
            f"${limit_usd:.6f} per {window}"
        )


class CircuitOpenError(RouterError):
    """The circuit breaker of ``provider`` is open."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        super().__init__(f"circuit breaker of '{provider}' is open")


class AllAttemptsFailedError(RouterError):
    """Every provider in the ranking failed. ``attempts`` holds every attempt in order."""

    def __init__(self, attempts: Sequence[Attempt], request_id: str = "") -> None:
        self.attempts = list(attempts)
        self.request_id = request_id
        detail = "; ".join(f"{a.arm}: {a.error_kind} ({a.message})" for a in self.attempts) or "no attempts"
        super().__init__(f"all {len(self.attempts)} attempts failed: {detail}")


class ProviderError(RouterError):
    """One provider call failed."""

    kind = "provider_error"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        request_id: str = "",
        status_code: int | None = None,
        retryable: bool | None = None,
        **extra: Any,
    ) -> None:
        self.provider = provider
        self.model = model
        self.request_id = request_id
        self.status_code = status_code
        if retryable is not None:
            self.retryable = retryable
        self.message = message
        for key, value in extra.items():
            setattr(self, key, value)
        where = f"{provider}::{model}: " if provider else ""
        super().__init__(f"{where}{message}")


class ProviderTimeout(ProviderError):
    kind = "timeout"


class ProviderUnavailable(ProviderError):
    kind = "unavailable"


class RateLimited(ProviderError):
    kind = "rate_limited"
    retry_after_s: float | None = None


class ContextLengthExceeded(ProviderError):
    kind = "context_length"


class ProviderRejected(ProviderError):
    kind = "rejected"
    retryable = False


class ProviderResponseError(ProviderError):
    kind = "bad_response"
