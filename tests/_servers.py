"""Helpers shared by the provider and simulator tests: clients bound to simulated providers."""

from __future__ import annotations

from typing import Any

from learned_router.config import ProviderConfig
from learned_router.providers import ADAPTERS, ProviderClient
from learned_router.sim_fleet import SimFleet
from learned_router.types import ChatRequest

SECRET = "sk-test-SECRET-9f8e7d6c5b4a"
USER_TEXT = "Write a python function that reverses a linked list."
REQ = ChatRequest.coerce({"messages": [{"role": "system", "content": "You are terse."},
                                       {"role": "user", "content": USER_TEXT}], "request_id": "req-123"})


def make_client(fleet: SimFleet, name: str, kind: str, *, api_key: str | None = SECRET,
                **overrides: Any) -> ProviderClient:
    """A ProviderClient of ``kind`` pointing at the simulated profile ``name``."""
    cfg = ProviderConfig(**fleet.provider_entry(name, kind=kind, **overrides))
    return ProviderClient(cfg, ADAPTERS[kind], api_key=api_key)


def reset_fleet(fleet: SimFleet) -> None:
    for profile in fleet.profiles.values():
        profile.set_mode("ok")
