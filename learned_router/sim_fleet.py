"""Several simulated providers (:class:`~learned_router.simulator.SimProfile`), one loopback server each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from learned_router.simulator import SimProfile, create_sim_app
from learned_router.threaded_server import ServerHandle, serve_in_thread

__all__ = ["SimFleet"]


class SimFleet:
    """Several simulated providers, one loopback server each.

        with SimFleet([SimProfile("cheap"), SimProfile("strong", default_quality=0.9)]) as fleet:
            fleet.base_url("cheap")                   # http://127.0.0.1:PORT/v1 (OpenAI kind)
            fleet.provider_entry("strong", kind="anthropic")   # a config ``providers`` entry
    """

    def __init__(self, profiles: Sequence[SimProfile], *, host: str = "127.0.0.1") -> None:
        names = [p.name for p in profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"profile names must be unique, got {names}")
        self.profiles = {p.name: p for p in profiles}
        self.host = host
        self.servers: dict[str, ServerHandle] = {}

    def start(self) -> SimFleet:
        try:
            for name, profile in self.profiles.items():
                if name not in self.servers:
                    self.servers[name] = serve_in_thread(create_sim_app(profile), host=self.host)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for handle in self.servers.values():
            handle.stop()
        self.servers.clear()

    def __enter__(self) -> SimFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def urls(self) -> dict[str, str]:
        """Profile name → server root URL."""
        return {name: handle.url for name, handle in self.servers.items()}

    def base_url(self, name: str, kind: str = "openai") -> str:
        """The ``base_url`` a provider of ``kind`` should be configured with for profile ``name``."""
        root = self.servers[name].url
        return f"{root}/v1" if kind == "openai" else root

    def provider_entry(self, name: str, *, kind: str = "openai", **overrides: Any) -> dict[str, Any]:
        """A ``providers`` config entry pointing at profile ``name`` (its prices and model); ``overrides``
        replace or add keys (``quality_prior``, ``region``, ``tasks``...)."""
        p = self.profiles[name]
        entry: dict[str, Any] = {"name": name, "kind": kind, "base_url": self.base_url(name, kind),
                                 "model": p.model, "price_in_per_mtok": p.price_in_per_mtok,
                                 "price_out_per_mtok": p.price_out_per_mtok}
        entry.update(overrides)
        return entry
