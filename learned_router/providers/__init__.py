"""Provider adapters (sans-I/O wire formats) and the clients that send their requests.

``ADAPTERS`` maps a config ``kind`` to its adapter; ``build_clients`` turns a RouterConfig into one
``ProviderClient`` per provider::

    clients = build_clients(cfg)                      # keys read from the environment via env:NAME refs
    reply = clients["gpt-4o-mini"].complete(ChatRequest.coerce({"messages": [...]}), timeout_s=30)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import httpx

from learned_router.config import RouterConfig, resolve_secret
from learned_router.providers._http import ProviderClient
from learned_router.providers.anthropic import AnthropicAdapter
from learned_router.providers.base import ProviderAdapter, estimate_tokens
from learned_router.providers.gemini import GeminiAdapter
from learned_router.providers.openai import OpenAIAdapter

__all__ = [
    "ADAPTERS",
    "AnthropicAdapter",
    "GeminiAdapter",
    "OpenAIAdapter",
    "ProviderAdapter",
    "ProviderClient",
    "build_clients",
    "estimate_tokens",
]

ADAPTERS: Mapping[str, ProviderAdapter] = MappingProxyType({
    "anthropic": AnthropicAdapter(),
    "gemini": GeminiAdapter(),
    "openai": OpenAIAdapter(),
})
"""Config ``kind`` → adapter. Adapters are stateless; the mapping is read-only (pass ``adapters=`` to
``build_clients`` to add your own)."""


def build_clients(cfg: RouterConfig, *, environ: Mapping[str, str] | None = None,
                  http: httpx.Client | None = None, ahttp: httpx.AsyncClient | None = None,
                  adapters: Mapping[str, ProviderAdapter] | None = None) -> dict[str, ProviderClient]:
    """One ProviderClient per configured provider, keyed by provider name.

    Args:
        cfg: the validated config.
        environ: where ``env:NAME`` key references are read (default ``os.environ``).
        http, ahttp: shared HTTP clients (each ProviderClient creates its own on first use when None).
        adapters: kind → adapter, defaults to ``ADAPTERS``.

    Does no network I/O. A missing key is not an error here (local servers need none); the provider
    answers 401, which the router treats as a provider-specific failure.
    """
    table = ADAPTERS if adapters is None else adapters
    return {
        p.name: ProviderClient(p, table[p.kind], api_key=resolve_secret(p.api_key, environ), http=http,
                               ahttp=ahttp)
        for p in cfg.providers
    }
