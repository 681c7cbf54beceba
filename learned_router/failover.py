"""Bookkeeping of one ``complete`` call walking down the ranking: which arm to try next, per-attempt
timeouts under an overall deadline, budget reservations, breaker and live-metric updates, and the attempt
list. Written once and shared by the sync and async routers, which only do the calls themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from learned_router.breaker import CircuitBreaker
from learned_router.budget import BudgetLedger, Reservation
from learned_router.analytics import Analytics
from learned_router.config import FailoverConfig, ProviderConfig
from learned_router.errors import AllAttemptsFailedError, ContextLengthExceeded, ProviderError, RateLimited
from learned_router.protocols import Clock
from learned_router.stats import LiveStats
from learned_router.types import ArmId, Attempt, ChatRequest, Decision

__all__ = ["FailoverRun"]

log = logging.getLogger(__name__)

# 401/403/404 from one provider mean *that* provider's key or model is wrong, so another provider may well
# serve the same request; other 4xx mean the request itself is bad and would fail everywhere.
_PROVIDER_SPECIFIC_4XX = frozenset({401, 403, 404})


@dataclass
class _Current:
    arm: ArmId
    started: float
    reservation: Reservation
    first_byte_at: float | None = None


@dataclass
class FailoverRun:
    """One request's walk down ``decision.ranking``."""

    decision: Decision
    request: ChatRequest
    providers: Mapping[str, ProviderConfig]  # by arm
    breaker: CircuitBreaker
    budget: BudgetLedger
    stats: LiveStats
    analytics: Analytics
    policy: FailoverConfig
    clock: Clock
    est_cost: Mapping[str, float]
    attempts: list[Attempt] = field(default_factory=list)
    trips: list[str] = field(default_factory=list)
    started: float = 0.0
    _current: _Current | None = None
    _min_context: int = 0

    def __post_init__(self) -> None:
        self.started = self.clock.monotonic()

    def remaining_s(self) -> float:
        return self.policy.deadline_s - (self.clock.monotonic() - self.started)

    def attempt_timeout_s(self) -> float:
        return max(0.001, min(self.policy.attempt_timeout_s, self.remaining_s()))

    def candidates(self) -> Iterator[ArmId]:
        """Yield each arm to call, in ranking order, after reserving budget and claiming the breaker.
        Arms skipped (breaker, budget, context window) are recorded as attempts with status ``skipped``."""
        for arm in self.decision.ranking:
            if len([a for a in self.attempts if a.status != "skipped"]) >= self.policy.max_attempts:
                return
            if self.remaining_s() <= 0:
                self._skip(arm, "deadline", "overall deadline reached")
                return
            p = self.providers[arm]
            if p.max_context_tokens <= self._min_context:
                self._skip(arm, "context_length", "context window not larger than a model that refused")
                continue
            if self.stats.snapshot()[arm].cooldown_until > self.clock.monotonic():
                self._skip(arm, "rate_limited", "cooling down after a 429")
                continue
            reserved = self.budget.reserve(p.name, self.request.tenant, self.est_cost.get(arm, 0.0))
            if not isinstance(reserved, Reservation):
                self._skip(arm, "budget", "provider over its budget")
                continue
            if not self.breaker.allow(arm):
                self.budget.release(reserved)
                self._skip(arm, "circuit_open", "circuit breaker open")
                continue
            self.stats.begin(arm)
            self._current = _Current(arm, self.clock.monotonic(), reserved)
            yield arm

    def first_byte(self) -> None:
        if self._current is not None and self._current.first_byte_at is None:
            self._current.first_byte_at = self.clock.monotonic()

    def _skip(self, arm: ArmId, kind: str, message: str) -> None:
        self.attempts.append(Attempt(arm=arm, status="skipped", latency_s=0.0, error_kind=kind, message=message))

    def _close_current(self) -> tuple[_Current, float]:
        cur = self._current
        assert cur is not None, "no attempt in progress"
        self._current = None
        self.stats.end(cur.arm)
        return cur, self.clock.monotonic() - cur.started

    def failed(self, err: ProviderError) -> bool:
        """Record a failed attempt. Returns whether failing over to the next arm makes sense."""
        cur, latency = self._close_current()
        self.budget.release(cur.reservation)
        retryable = bool(err.retryable) or err.status_code in _PROVIDER_SPECIFIC_4XX
        provider_fault = retryable and not isinstance(err, ContextLengthExceeded | RateLimited)
        if isinstance(err, RateLimited):
            self.stats.cool_down(cur.arm, err.retry_after_s if err.retry_after_s is not None else 1.0)
            self.breaker.release(cur.arm)
        elif isinstance(err, ContextLengthExceeded):
            self._min_context = max(self._min_context, self.providers[cur.arm].max_context_tokens)
            self.breaker.release(cur.arm)
        elif provider_fault:
            self.stats.record_error(cur.arm)
            if self.breaker.record_failure(cur.arm):
                self.trips.append(cur.arm)
                self.analytics.record_trip(cur.arm)
                log.warning("circuit breaker of %s opened", cur.arm)
        else:
            self.breaker.release(cur.arm)
        self.attempts.append(Attempt(arm=cur.arm, status="error", latency_s=latency, error_kind=err.kind,
                                     message=str(err), retryable=retryable, status_code=err.status_code))
        self.analytics.record_attempt(cur.arm, ok=False, latency_s=latency, error_kind=err.kind)
        return retryable

    def succeeded(self, cost_usd: float, input_tokens: int, output_tokens: int) -> tuple[ArmId, float, float | None]:
        """Record the successful attempt; returns (arm, latency_s, ttft_s)."""
        cur, latency = self._close_current()
        self.budget.commit(cur.reservation, cost_usd)
        ttft = cur.first_byte_at - cur.started if cur.first_byte_at is not None else None
        self.breaker.record_success(cur.arm)
        expected = self.decision.output_tokens_est
        ratio = output_tokens / expected if expected > 0 and output_tokens > 0 else None
        self.stats.record_success(cur.arm, latency, ttft, out_ratio=ratio)
        self.attempts.append(Attempt(arm=cur.arm, status="ok", latency_s=latency))
        self.analytics.record_attempt(cur.arm, ok=True, latency_s=latency, cost_usd=cost_usd,
                                      input_tokens=input_tokens, output_tokens=output_tokens)
        return cur.arm, latency, ttft

    def abandon(self) -> None:
        """The caller stopped (cancelled or crashed) mid-attempt: give back what the attempt held."""
        if self._current is not None:
            cur, latency = self._close_current()
            self.budget.release(cur.reservation)
            self.breaker.release(cur.arm)
            self.attempts.append(Attempt(arm=cur.arm, status="error", latency_s=latency, error_kind="cancelled",
                                         message="the caller stopped before the attempt finished"))

    def error(self) -> AllAttemptsFailedError:
        return AllAttemptsFailedError(self.attempts, self.request.request_id)
