"""Per-provider analytics: requests, successes, errors by kind, cost, latency percentiles, breaker trips.

Fed by the router after every attempt, or rebuilt from decision-log rows (``from_rows``).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Analytics"]


@dataclass(slots=True)
class _ArmTotals:
    attempts: int = 0
    successes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    latencies_s: list[float] = field(default_factory=list)
    breaker_trips: int = 0
    served_first: int = 0
    failovers_from: int = 0


class Analytics:
    """Thread-safe counters per arm. Latency samples are kept up to ``max_samples`` per arm (newest kept)."""

    def __init__(self, *, max_samples: int = 100_000) -> None:
        self.max_samples = max_samples
        self._lock = threading.Lock()
        self._arms: dict[str, _ArmTotals] = defaultdict(_ArmTotals)
        self.requests = 0
        self.failed_requests = 0

    def record_attempt(self, arm: str, *, ok: bool, latency_s: float, error_kind: str | None = None,
                       cost_usd: float = 0.0, input_tokens: int = 0, output_tokens: int = 0) -> None:
        with self._lock:
            t = self._arms[arm]
            t.attempts += 1
            if ok:
                t.successes += 1
                t.cost_usd += cost_usd
                t.input_tokens += input_tokens
                t.output_tokens += output_tokens
                t.latencies_s.append(latency_s)
                if len(t.latencies_s) > self.max_samples:
                    del t.latencies_s[: len(t.latencies_s) - self.max_samples]
            else:
                t.errors[error_kind or "error"] += 1

    def record_request(self, *, ok: bool, first_arm: str | None = None, served_arm: str | None = None) -> None:
        with self._lock:
            self.requests += 1
            if not ok:
                self.failed_requests += 1
            if first_arm is not None:
                if served_arm == first_arm:
                    self._arms[first_arm].served_first += 1
                else:
                    self._arms[first_arm].failovers_from += 1

    def record_trip(self, arm: str) -> None:
        with self._lock:
            self._arms[arm].breaker_trips += 1

    def report(self, breaker_states: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A JSON-safe report: totals and one row per arm (every arm in ``breaker_states`` too, with zeros
        when it got no traffic)."""
        with self._lock:
            rows = []
            for arm in sorted(set(self._arms) | set(breaker_states or {})):
                t = self._arms.get(arm) or _ArmTotals()
                lat = np.asarray(t.latencies_s, dtype=float)
                pct = (np.percentile(lat, [50, 95, 99]) * 1000).round(1).tolist() if lat.size else [None] * 3
                rows.append({
                    "arm": arm,
                    "requests": t.attempts,
                    "successes": t.successes,
                    "errors": sum(t.errors.values()),
                    "errors_by_kind": dict(sorted(t.errors.items())),
                    "total_cost_usd": round(t.cost_usd, 8),
                    "cost_per_request_usd": round(t.cost_usd / t.successes, 8) if t.successes else 0.0,
                    "input_tokens": t.input_tokens,
                    "output_tokens": t.output_tokens,
                    "latency_p50_ms": pct[0],
                    "latency_p95_ms": pct[1],
                    "latency_p99_ms": pct[2],
                    "breaker_trips": t.breaker_trips,
                    "breaker_state": (breaker_states or {}).get(arm),
                    "failovers_from": t.failovers_from,
                })
            return {
                "requests": self.requests,
                "failed_requests": self.failed_requests,
                "total_cost_usd": round(sum(r["total_cost_usd"] for r in rows), 8),
                "providers": rows,
            }

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Analytics:
        """Rebuild analytics from decision-log rows (each with ``attempts``, ``served_arm``, ``cost_usd``,
        tokens, and optionally ``breaker_trips``: the arms whose breaker this request tripped)."""
        a = cls()
        for row in rows:
            attempts = row.get("attempts") or []
            served = row.get("served_arm")
            for att in attempts:
                ok = att.get("status") == "ok"
                a.record_attempt(
                    att["arm"], ok=ok, latency_s=float(att.get("latency_s") or 0.0), error_kind=att.get("error_kind"),
                    cost_usd=float(row.get("cost_usd") or 0.0) if ok and att["arm"] == served else 0.0,
                    input_tokens=int(row.get("input_tokens") or 0) if ok else 0,
                    output_tokens=int(row.get("output_tokens") or 0) if ok else 0,
                )
            for arm in row.get("breaker_trips") or []:
                a.record_trip(arm)
            first = attempts[0]["arm"] if attempts else None
            a.record_request(ok=served is not None, first_arm=first, served_arm=served)
        return a
