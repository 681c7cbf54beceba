"""Live per-arm measurements: moving averages of latency, quality and answer length, availability, in-flight
load.

Updated after every call; read by the eligibility filter and the rule strategies. Each arm's state is an
immutable ``ArmStats`` replaced on update, so a snapshot is one dict copy (no per-arm copying on the
request path).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import NamedTuple

from learned_router.protocols import Clock, SystemClock

__all__ = ["ArmStats", "LiveStats"]

# each answer's billed-over-expected output ratio is clipped to this range (an empty or a runaway answer
# is noise)
_OUT_RATIO_BOUNDS = (0.05, 20.0)


class ArmStats(NamedTuple):
    """``availability`` is as of ``availability_at`` (see ``LiveStats.availability``). A NamedTuple, not a
    frozen dataclass: it is replaced three times per call, and ``_replace`` costs a third of
    ``dataclasses.replace``."""

    latency_s: float
    quality: float
    availability: float = 1.0
    in_flight: int = 0
    ttft_s: float | None = None
    calls: int = 0
    availability_at: float = 0.0
    cooldown_until: float = 0.0
    out_ratio: float = 1.0  # moving average of billed output tokens / the request's expected output tokens


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

    def availability(self, s: ArmStats, now: float) -> float:
        """``s.availability`` healed up to ``now`` (monotonic seconds)."""
        if s.availability >= 1.0:
            return 1.0
        dt = max(0.0, now - s.availability_at)
        return 1.0 - (1.0 - s.availability) * 0.5 ** (dt / self.heal_half_life_s)

    def get(self, arm: str) -> ArmStats:
        """The arm's stats, availability healed to now."""
        s = self._arms[arm]
        return s._replace(availability=self.availability(s, self.clock.monotonic()))

    def snapshot(self) -> dict[str, ArmStats]:
        """The current stats of every arm (availability as stored: heal it with ``availability``)."""
        return dict(self._arms)

    def arms(self) -> Iterable[str]:
        return list(self._arms)

    def _update(self, arm: str, **changes: object) -> None:
        self._arms[arm] = self._arms[arm]._replace(**changes)

    def begin(self, arm: str) -> None:
        with self._lock:
            self._update(arm, in_flight=self._arms[arm].in_flight + 1)

    def end(self, arm: str) -> None:
        with self._lock:
            self._update(arm, in_flight=max(0, self._arms[arm].in_flight - 1))

    def cool_down(self, arm: str, seconds: float) -> None:
        """Keep ``arm`` out of rotation for ``seconds`` (a provider's ``Retry-After``)."""
        until = self.clock.monotonic() + seconds
        with self._lock:
            self._update(arm, cooldown_until=max(self._arms[arm].cooldown_until, until))

    def record_success(self, arm: str, latency_s: float, ttft_s: float | None = None,
                       out_ratio: float | None = None) -> None:
        """A call succeeded. ``out_ratio``: the output tokens it was billed for over the output tokens the
        request was expected to need (``Features.output_tokens_est``); a verbose model or one that bills
        hidden reasoning tokens moves above 1, a terse one below, and its predicted cost follows."""
        now = self.clock.monotonic()
        a = self.alpha
        with self._lock:
            s = self._arms[arm]
            ttft = s.ttft_s
            if ttft_s is not None:
                ttft = ttft_s if ttft is None else (1 - a) * ttft + a * ttft_s
            ratio = s.out_ratio
            if out_ratio is not None and out_ratio > 0:
                ratio = (1 - a) * ratio + a * min(max(out_ratio, _OUT_RATIO_BOUNDS[0]), _OUT_RATIO_BOUNDS[1])
            self._update(arm, latency_s=(1 - a) * s.latency_s + a * latency_s, ttft_s=ttft, out_ratio=ratio,
                         availability=min(1.0, self.availability(s, now) * self.success_factor),
                         availability_at=now, calls=s.calls + 1)

    def record_error(self, arm: str) -> None:
        now = self.clock.monotonic()
        with self._lock:
            s = self._arms[arm]
            self._update(arm, availability=self.availability(s, now) * self.error_factor, availability_at=now,
                         calls=s.calls + 1)

    def record_quality(self, arm: str, quality: float) -> None:
        with self._lock:
            s = self._arms[arm]
            self._update(arm, quality=(1 - self.alpha) * s.quality + self.alpha * quality)
