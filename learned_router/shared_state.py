"""Budget balances and breaker states in Redis, so that several router processes (gateways) share them.

Each operation is one Lua script, so it is atomic on the server: a reservation checks every cap and adds
to all of them in one step, and a breaker transition reads and writes the state in one step. The budget keys
expire two windows after they were last touched, so old windows clean themselves up.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from learned_router.breaker import BreakerState, _Transition

__all__ = ["RedisBreakerStore", "RedisBudgetBackend", "connect"]

_RESERVE = """
local amount = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', key) or '0')
  if used + amount > tonumber(ARGV[2 + i]) + 1e-12 then
    return key
  end
end
for _, key in ipairs(KEYS) do
  redis.call('INCRBYFLOAT', key, amount)
  redis.call('EXPIRE', key, ttl)
end
return false
"""

_SETTLE = """
local delta = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local v = tonumber(redis.call('INCRBYFLOAT', key, delta))
  if v < 0 then redis.call('SET', key, '0') end
end
return true
"""


def connect(url: str) -> Any:
    """A Redis client for ``url`` (``redis://host:port/db``); imported lazily."""
    import redis

    return redis.Redis.from_url(url)


class RedisBudgetBackend:
    """``budget.BudgetBackend`` on Redis. ``ttl_s`` defaults to two months, longer than any window."""

    def __init__(self, client: Any, *, prefix: str = "learned-router:budget:", ttl_s: int = 62 * 86400) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def try_reserve(self, limits: Sequence[tuple[str, float]], amount: float) -> str | None:
        keys = [self.prefix + k for k, _ in limits]
        failed = self._reserve(keys=keys, args=[repr(amount), self.ttl_s, *[repr(lim) for _, lim in limits]])
        if not failed:
            return None
        name = failed.decode() if isinstance(failed, bytes) else str(failed)
        return name[len(self.prefix):]

    def settle(self, keys: Sequence[str], reserved: float, actual: float) -> None:
        self._settle(keys=[self.prefix + k for k in keys], args=[repr(actual - reserved)])

    def used(self, key: str) -> float:
        value = self.client.get(self.prefix + key)
        return float(value) if value is not None else 0.0


class RedisBreakerStore:
    """``breaker.BreakerStore`` on Redis, with optimistic locking (WATCH/MULTI) around each transition."""

    def __init__(self, client: Any, *, prefix: str = "learned-router:breaker:") -> None:
        self.client = client
        self.prefix = prefix

    @staticmethod
    def _decode(raw: bytes | None) -> BreakerState:
        return BreakerState(**json.loads(raw)) if raw else BreakerState()

    def get(self, arm: str) -> BreakerState:
        return self._decode(self.client.get(self.prefix + arm))

    def get_many(self, arms: Sequence[str]) -> list[BreakerState]:
        if not arms:
            return []
        return [self._decode(raw) for raw in self.client.mget([self.prefix + a for a in arms])]

    def update(self, arm: str, fn: _Transition) -> tuple[BreakerState, object]:
        import redis

        key = self.prefix + arm
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    new, result = fn(self._decode(pipe.get(key)))
                    pipe.multi()
                    pipe.set(key, json.dumps(asdict(new)))
                    pipe.execute()
                    return new, result
                except redis.WatchError:
                    continue
