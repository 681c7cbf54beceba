"""``learned-router simulate``: the demo's five simulated providers as long-running servers on loopback,
plus a config file pointing at them, so the gateway, training, promotion and A/B experiments can be tried
end to end with no API key::

    learned-router simulate --config-out out/sim.yaml &          # providers on 127.0.0.1:9101-9105
    learned-router serve --config out/sim.yaml --port 8000       # the gateway in front of them
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from learned_router.demo import DemoTimings, demo_config, demo_profiles

__all__ = ["simulate_config", "start_fleet"]


def start_fleet(port: int, *, seed: int = 0) -> Any:
    """Start the demo's providers on ``port``, ``port+1``, ... (``port=0``: free ports). Returns a SimFleet."""
    from learned_router.sim_fleet import SimFleet
    from learned_router.simulator import create_sim_app
    from learned_router.threaded_server import serve_in_thread

    fleet = SimFleet(demo_profiles(seed=seed))
    for i, (name, profile) in enumerate(fleet.profiles.items()):
        fleet.servers[name] = serve_in_thread(create_sim_app(profile), port=port + i if port else 0)
    return fleet


def simulate_config(fleet: Any, *, log_path: Path, strategy: str = "balanced", model: str | None = None,
                    ab_model: str | None = None, ab_share: float = 0.5) -> dict[str, Any]:
    """A router config for a running fleet: the demo's providers, a decision log, and optionally a trained
    model (``model``) or an A/B experiment of a trained model against the balanced rules (``ab_model``)."""
    cfg = demo_config(fleet, DemoTimings(), log_path)
    cfg["routing"]["strategy"] = strategy
    if model is not None:
        cfg["routing"]["model_path"] = model
    if ab_model is not None:
        cfg["experiments"] = [{
            "name": "learned-vs-balanced", "unit": "session",
            "variants": [{"name": "learned", "weight": ab_share, "strategy": "learned", "model_path": ab_model},
                         {"name": "balanced", "weight": 1 - ab_share, "strategy": "balanced"}],
        }]
    return cfg


def run_simulation(*, port: int, config_out: Path, log_path: Path, strategy: str, model: str | None,
                   ab_model: str | None, seed: int, echo: Callable[[str], None], stop_after_s: float | None = None
                   ) -> None:
    """Start the providers, write the config, and serve until interrupted (or ``stop_after_s``)."""
    fleet = start_fleet(port, seed=seed)
    try:
        cfg = simulate_config(fleet, log_path=log_path.resolve(), strategy=strategy, model=model, ab_model=ab_model)
        config_out.parent.mkdir(parents=True, exist_ok=True)
        config_out.write_text(yaml.safe_dump(cfg, sort_keys=False))
        for name, handle in fleet.servers.items():
            echo(f"{name:8s} {handle.url}/v1")
        echo(f"config written to {config_out}; serve it with:  learned-router serve --config {config_out}")
        echo("press Ctrl-C to stop the providers")
        started = time.monotonic()
        while stop_after_s is None or time.monotonic() - started < stop_after_s:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
