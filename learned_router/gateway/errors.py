"""How failures become HTTP answers: one OpenAI-style error body, ``{"error": {"message", "type", "param",
"code"}}``, and one status per kind of failure.

=================================  ======  =========================  ===========================
failure                            status  ``type``                   ``code``
=================================  ======  =========================  ===========================
body not JSON / not an object      400     invalid_request_error      invalid_json
bad routing header or hint         400     invalid_request_error      invalid_value
no key / unknown key               401     invalid_request_error      invalid_api_key
key's tenant ≠ named tenant        403     permission_error           tenant_mismatch
unknown ``model``                  404     invalid_request_error      model_not_found
unknown ``request_id`` (feedback)  404     invalid_request_error      request_not_found
body over the size limit           413     invalid_request_error      request_too_large
wrong type, unknown field, empty   422     invalid_request_error      invalid_value / ...
tenant over its budget             429     budget_exceeded            budget_exceeded
every attempt failed               502     upstream_error             all_attempts_failed
no eligible provider               503     no_eligible_provider       no_eligible_provider
anything unexpected                500     server_error               internal_error
=================================  ======  =========================  ===========================

Every message passes through a ``Redactor`` so that provider keys never leave the gateway.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from learned_router.errors import (
    AllAttemptsFailedError,
    BudgetExceededError,
    NoEligibleArmError,
    ProviderError,
    RequestError,
    RouterError,
)
from learned_router.gateway.wire import WireError

__all__ = ["HttpError", "Redactor", "error_body", "to_http_error"]

# Looks like a bearer secret even when we were not told about it (OpenAI, Anthropic, Groq-style keys).
_KEY_LIKE = re.compile(r"\b(?:sk|pk|gsk|xai|key)-[A-Za-z0-9_\-]{12,}")


class Redactor:
    """Replaces known secrets (and anything shaped like an API key) with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return _KEY_LIKE.sub("***", text)


class HttpError(Exception):
    """An error answer: HTTP ``status`` plus the fields of the OpenAI error object (``kind`` is its
    ``type``)."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.param = param
        self.extra = extra or {}
        self.headers = headers or {}
        super().__init__(message)

    def body(self, redact: Redactor) -> dict[str, Any]:
        return error_body(redact(self.message), self.kind, self.code, self.param, self.extra)

    def encode(self, redact: Redactor) -> bytes:
        return json.dumps(self.body(redact)).encode()


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAI error object; ``kind`` goes to its ``type`` field."""
    err: dict[str, Any] = {"message": message, "type": kind, "param": param, "code": code}
    if extra:
        err.update(extra)
    return {"error": err}


def _attempts(err: AllAttemptsFailedError, redact: Redactor) -> tuple[str, list[dict[str, Any]]]:
    rows = []
    parts = []
    for a in err.attempts:
        rows.append({"arm": a.arm, "status": a.status, "error_kind": a.error_kind, "status_code": a.status_code,
                     "latency_ms": round(a.latency_s * 1000, 1), "message": redact(a.message)[:300]})
        code = f", HTTP {a.status_code}" if a.status_code else ""
        parts.append(f"{a.arm}: {a.error_kind or a.status}{code}")
    summary = "; ".join(parts) or "no provider could be tried"
    return f"all {len(err.attempts)} attempts failed: {summary}", rows


def to_http_error(exc: BaseException, redact: Redactor) -> HttpError:
    """Map any exception raised while serving a request to the error answer (see the module table)."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, WireError):
        kind = "permission_error" if exc.status == 403 else "invalid_request_error"
        return HttpError(exc.status, exc.message, kind=kind, code=exc.code, param=exc.param)
    if isinstance(exc, RequestError):
        if exc.field == "model":
            return HttpError(404, str(exc), code="model_not_found", param="model")
        return HttpError(400, str(exc), code="invalid_value", param=exc.field or None)
    if isinstance(exc, BudgetExceededError):
        return HttpError(429, str(exc), kind="budget_exceeded", code="budget_exceeded",
                         extra={"limit_usd": exc.limit_usd, "window": exc.window})
    if isinstance(exc, AllAttemptsFailedError):
        message, rows = _attempts(exc, redact)
        return HttpError(502, message, kind="upstream_error", code="all_attempts_failed",
                         extra={"attempts": rows})
    if isinstance(exc, NoEligibleArmError):
        return HttpError(503, str(exc), kind="no_eligible_provider", code="no_eligible_provider",
                         extra={"reasons": dict(exc.reasons)})
    if isinstance(exc, ProviderError):
        return HttpError(502, f"upstream failed: {exc}", kind="upstream_error", code=exc.kind)
    if isinstance(exc, RouterError):
        return HttpError(503, f"the router could not serve this request: {type(exc).__name__}",
                         kind="server_error", code="router_error")
    return HttpError(500, "internal error in the gateway; the request id identifies it in the server log",
                     kind="server_error", code="internal_error")
