"""Spending caps per provider and per tenant over a day or month window.

The estimated cost is *reserved* when a request is admitted and *committed* with the real cost afterwards
(or released when the call never happened), so concurrent requests cannot overshoot a cap by more than the
estimates of the requests in flight. Balances live behind ``BudgetBackend`` so a shared store can hold them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from learned_router.errors import BudgetExceededError
from learned_router.protocols import Clock, SystemClock

__all__ = ["BudgetBackend", "BudgetLedger", "MemoryBudgetBackend", "Reservation"]


class BudgetBackend(Protocol):
    """Atomic balances: ``try_reserve`` adds ``amount`` to every key's reserved total only if no key would
    exceed its limit, and returns the first key that would (or None)."""

    def try_reserve(self, limits: Sequence[tuple[str, float]], amount: float) -> str | None: ...

    def settle(self, keys: Sequence[str], reserved: float, actual: float) -> None: ...

    def used(self, key: str) -> float: ...


class MemoryBudgetBackend:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[str, float] = {}

    def try_reserve(self, limits: Sequence[tuple[str, float]], amount: float) -> str | None:
        with self._lock:
            for key, limit in limits:
                if self._used.get(key, 0.0) + amount > limit + 1e-12:
                    return key
            for key, _ in limits:
                self._used[key] = self._used.get(key, 0.0) + amount
            return None

    def settle(self, keys: Sequence[str], reserved: float, actual: float) -> None:
        with self._lock:
            for key in keys:
                self._used[key] = max(0.0, self._used.get(key, 0.0) - reserved + actual)

    def used(self, key: str) -> float:
        with self._lock:
            return self._used.get(key, 0.0)


@dataclass(frozen=True, slots=True)
class Reservation:
    keys: tuple[str, ...]
    amount_usd: float


class BudgetLedger:
    """Args:
        provider_limits / tenant_limits: USD per window.
        window: ``"day"`` or ``"month"`` (UTC calendar windows).
    """

    def __init__(self, *, provider_limits: Mapping[str, float] | None = None,
                 tenant_limits: Mapping[str, float] | None = None, window: str = "day",
                 clock: Clock | None = None, backend: BudgetBackend | None = None) -> None:
        self.provider_limits = dict(provider_limits or {})
        self.tenant_limits = dict(tenant_limits or {})
        self.window = window
        self.clock = clock or SystemClock()
        self.backend = backend or MemoryBudgetBackend()

    def _window_key(self) -> str:
        now: datetime = self.clock.now()
        return now.strftime("%Y-%m-%d") if self.window == "day" else now.strftime("%Y-%m")

    def _key(self, scope: str, name: str) -> str:
        return f"{scope}:{name}:{self._window_key()}"

    def provider_headroom(self, provider: str, amount_usd: float) -> str | None:
        """None if the provider could take ``amount_usd`` more now, else the reason it cannot."""
        limit = self.provider_limits.get(provider)
        if limit is None:
            return None
        used = self.backend.used(self._key("provider", provider))
        if used + amount_usd > limit + 1e-12:
            return f"over its budget (${used:.4f} of ${limit:.4f} per {self.window})"
        return None

    def check_tenant(self, tenant: str | None, amount_usd: float) -> None:
        """Raise BudgetExceededError if the tenant could not take ``amount_usd`` more now."""
        if tenant is None or tenant not in self.tenant_limits:
            return
        limit = self.tenant_limits[tenant]
        used = self.backend.used(self._key("tenant", tenant))
        if used + amount_usd > limit + 1e-12:
            raise BudgetExceededError("tenant", tenant, limit, used, self.window)

    def reserve(self, provider: str, tenant: str | None, amount_usd: float) -> Reservation | str:
        """Reserve ``amount_usd`` against the provider's and the tenant's caps.

        Returns a Reservation, or the scope (``"provider"``) whose cap would be exceeded.
        Raises BudgetExceededError when the tenant's cap would be exceeded.
        """
        limits: list[tuple[str, float]] = []
        if provider in self.provider_limits:
            limits.append((self._key("provider", provider), self.provider_limits[provider]))
        if tenant is not None and tenant in self.tenant_limits:
            limits.append((self._key("tenant", tenant), self.tenant_limits[tenant]))
        if not limits:
            return Reservation((), amount_usd)
        failed = self.backend.try_reserve(limits, amount_usd)
        if failed is None:
            return Reservation(tuple(k for k, _ in limits), amount_usd)
        if failed.startswith("tenant:"):
            assert tenant is not None
            raise BudgetExceededError("tenant", tenant, self.tenant_limits[tenant], self.backend.used(failed),
                                      self.window)
        return "provider"

    def commit(self, reservation: Reservation, actual_usd: float) -> None:
        if reservation.keys:
            self.backend.settle(reservation.keys, reservation.amount_usd, actual_usd)

    def release(self, reservation: Reservation) -> None:
        self.commit(reservation, 0.0)

    def spent(self, scope: str, name: str) -> float:
        """Committed plus reserved spending of ``scope`` (provider or tenant) in the current window."""
        return self.backend.used(self._key(scope, name))

    def usage(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for scope, limits in (("provider", self.provider_limits), ("tenant", self.tenant_limits)):
            for name, limit in limits.items():
                out[f"{scope}:{name}"] = {"limit_usd": limit, "used_usd": self.spent(scope, name)}
        return out
