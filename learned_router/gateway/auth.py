"""Client authentication: ``Authorization: Bearer <key>`` → tenant.

Keys are configured per tenant as the hex sha256 of the key (never the key itself)::

    tenants:
      acme:
        keys_sha256: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]

Generate one with ``printf %s "$KEY" | sha256sum``. When no tenant has any key configured, authentication
is off: every request is accepted (the ``Authorization`` header is ignored) and the tenant, if any, is the
one the request names itself (``tenant`` body field or ``x-learned-router-tenant`` header).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from learned_router.config import TenantConfig
from learned_router.gateway.errors import HttpError

__all__ = ["KeyRing"]


class KeyRing:
    """Maps key digests to tenants.

    Args:
        tenants: tenant name → TenantConfig (only ``keys_sha256`` is read).
    """

    def __init__(self, tenants: Mapping[str, TenantConfig]) -> None:
        self._by_digest: dict[str, str] = {}
        for name, tenant in tenants.items():
            for digest in tenant.keys_sha256:
                self._by_digest[digest.lower()] = name

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (if not, authentication is off)."""
        return bool(self._by_digest)

    def tenant_for(self, authorization: str | None) -> str | None:
        """The tenant of the presented key, or None when authentication is off.

        Raises:
            HttpError: 401 when authentication is on and the header is missing, malformed or the key unknown.
        """
        if not self._by_digest:
            return None
        if not authorization:
            raise HttpError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise HttpError(401, "malformed Authorization header: expected 'Bearer <key>'", code="invalid_api_key")
        # The dict lookup compares digests, not keys: timing reveals nothing usable about a valid key.
        tenant = self._by_digest.get(hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest())
        if tenant is None:
            raise HttpError(401, "incorrect API key provided", code="invalid_api_key")
        return tenant
