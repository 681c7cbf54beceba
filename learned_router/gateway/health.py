"""``GET /health``: liveness and readiness of one gateway.

Ready means: the config is loaded (always true once the app exists), the decision log is writable when one
is configured, and at least one provider is eligible right now (breaker, cool-down, availability and budget
as the router itself would judge them for a one-token request). The answer is 200 when ready, 503 when not;
the body says why either way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from learned_router.eligibility import EligibilityRules, filter_arms
from learned_router.strategies.base import Features
from learned_router.types import ChatRequest

__all__ = ["health_report"]

_PROBE = ChatRequest(messages=({"role": "user", "content": "health check"},), request_id="health-check")
_PROBE_FEATURES = Features(input_tokens=1, output_tokens_est=1)


def _log_status(router: Any) -> dict[str, Any]:
    path = router.config.log.path
    store = router.log
    if store is None and path is None:
        return {"configured": False, "writable": None}
    check = getattr(store, "healthy", None)
    if callable(check):
        try:
            ok = bool(check())
        except Exception as exc:  # noqa: BLE001 - a failing check is reported, never raised
            return {"configured": True, "writable": False, "error": type(exc).__name__}
        return {"configured": True, "writable": ok}
    if path is None:
        return {"configured": True, "writable": True}
    target = Path(path)
    if target.exists():
        return {"configured": True, "writable": os.access(target, os.W_OK)}
    parent = target.parent
    return {"configured": True, "writable": parent.is_dir() and os.access(parent, os.W_OK)}


def health_report(router: Any) -> tuple[bool, dict[str, Any]]:
    """(ready, JSON-safe body) for ``router``. Never raises."""
    cfg = router.config
    r = cfg.routing
    try:
        eligible, excluded = filter_arms(
            cfg.providers, _PROBE, _PROBE_FEATURES, router.stats.snapshot(), now=router.clock.monotonic(),
            rules=EligibilityRules(r.availability_threshold, r.availability_min_calls),
            breaker_refusing=router.breaker.refusing([p.arm for p in cfg.providers]),
            budget_reason=router.budget.provider_headroom,
        )
        providers: dict[str, Any] = {"total": len(cfg.providers), "eligible": len(eligible),
                                     "excluded": {str(k): v for k, v in excluded.items()}}
    except Exception as exc:  # noqa: BLE001 - health must answer even when the router state is broken
        providers = {"total": len(cfg.providers), "eligible": 0, "error": type(exc).__name__}
    log = _log_status(router)
    ready = providers["eligible"] > 0 and log["writable"] is not False
    body = {"status": "ok" if ready else "unavailable", "live": True, "ready": ready, "config_loaded": True,
            "strategy": r.strategy, "providers": providers, "log_store": log}
    return ready, body
