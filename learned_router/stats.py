"""Live per-arm measurements: moving averages of latency and quality, availability, in-flight load.

Updated after every call; read by the eligibility filter and the rule strategies.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from learned_router.protocols import Clock, SystemClock

__all__ = ["ArmStats", "LiveStats"]


@dataclass(slots=True)
class ArmStats:
    latency_s: float
    quality: float
    availability: float = 1.0
    in_flight: int = 0
    ttft_s: float | None = None
    calls: int = 0
    availability_at: float = 0.0
    cooldown_until: float = 0.0


class LiveStats:
    """Thread-safe live metrics per arm.

    Args:
        priors: arm → (quality prior, latency prior in seconds).
        alpha: weight of a new observation in the moving averages (0.1 keeps 0.9 of the old value).
        error_factor: availability is multiplied by this on an error (0.95).
        success_factor: availability is multiplied by this on a success, capped at 1 (1.01).
        heal_half_life_s: an arm that gets no traffic (because it was excluded) regains availability: its
            shortfall from 1 halves every ``heal_half_life_s`` without calls. Without this an excluded arm
            could never come back, since only a success raises availability.
        clock: injected time source (monotonic seconds).
    """

    def __init__(self, priors: dict[str, tuple[float, float]], *, alpha: float = 0.1,
                 error_factor: float = 0.95, success_factor: float = 1.01, heal_half_life_s: float = 30.0,
                 clock: Clock | None = None) -> None:
        self.alpha = alpha
        self.error_factor = error_factor
        self.success_factor = success_factor
        self.heal_half_life_s = heal_half_life_s
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._arms = {arm: ArmStats(latency_s=lat, quality=q) for arm, (q, lat) in priors.items()}

    def _healed(self, s: ArmStats, now: float) -> float:
        if s.availability >= 1.0:
            return 1.0
        dt = max(0.0, now - s.availability_at)
        return 1.0 - (1.0 - s.availability) * 0.5 ** (dt / self.heal_half_life_s)

    def _copy(self, s: ArmStats, now: float) -> ArmStats:
        return ArmStats(s.latency_s, s.quality, self._healed(s, now), s.in_flight, s.ttft_s, s.calls,
                        s.availability_at, s.cooldown_until)

    def get(self, arm: str) -> ArmStats:
        now = self.clock.monotonic()
        with self._lock:
            return self._copy(self._arms[arm], now)

    def snapshot(self) -> dict[str, ArmStats]:
        now = self.clock.monotonic()
        with self._lock:
            return {a: self._copy(s, now) for a, s in self._arms.items()}

    def cool_down(self, arm: str, seconds: float) -> None:
        """Keep ``arm`` out of rotation for ``seconds`` (a provider's ``Retry-After``)."""
        until = self.clock.monotonic() + seconds
        with self._lock:
            s = self._arms[arm]
            s.cooldown_until = max(s.cooldown_until, until)

    def arms(self) -> Iterable[str]:
        return list(self._arms)

    def begin(self, arm: str) -> None:
        with self._lock:
            self._arms[arm].in_flight += 1

    def end(self, arm: str) -> None:
        with self._lock:
            s = self._arms[arm]
            s.in_flight = max(0, s.in_flight - 1)

    def record_success(self, arm: str, latency_s: float, ttft_s: float | None = None) -> None:
        with self._lock:
            s = self._arms[arm]
            s.latency_s = (1 - self.alpha) * s.latency_s + self.alpha * latency_s
            if ttft_s is not None:
                s.ttft_s = ttft_s if s.ttft_s is None else (1 - self.alpha) * s.ttft_s + self.alpha * ttft_s
            now = self.clock.monotonic()
            s.availability = min(1.0, self._healed(s, now) * self.success_factor)
            s.availability_at = now
            s.calls += 1

    def record_error(self, arm: str) -> None:
        with self._lock:
            s = self._arms[arm]
            now = self.clock.monotonic()
            s.availability = self._healed(s, now) * self.error_factor
            s.availability_at = now
            s.calls += 1

    def record_quality(self, arm: str, quality: float) -> None:
        with self._lock:
            s = self._arms[arm]
            s.quality = (1 - self.alpha) * s.quality + self.alpha * quality
