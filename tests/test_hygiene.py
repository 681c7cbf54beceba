"""Package hygiene: the public API list, lazy heavy imports, module sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import learned_router

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_complete():
    assert learned_router.__all__ == sorted(learned_router.__all__)
    public = {n for n in dir(learned_router) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(learned_router.__all__)


def test_core_import_loads_no_heavy_library_and_needs_no_key_or_network():
    code = """
import socket, sys
def refuse(*a, **k):
    raise RuntimeError("network used at import")
socket.socket.connect = refuse
socket.create_connection = refuse
import learned_router
from learned_router import Router
import learned_router.router, learned_router.planning, learned_router.cli, learned_router.failover
router = Router.from_config({"providers": [{"name": "a", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
    "model": "m", "price_in_per_mtok": 1, "price_out_per_mtok": 1}]})
router.route({"messages": [{"role": "user", "content": "hi"}]})
heavy = [m for m in ("torch", "sentence_transformers", "mlflow", "fastapi", "matplotlib", "pandas") if m in sys.modules]
print(",".join(heavy))
"""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == ""


def test_modules_stay_small():
    sizes = {p: len(p.read_text().splitlines()) for d in ("learned_router", "training")
             for p in (ROOT / d).rglob("*.py")}
    too_big = {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > 600}
    assert not too_big, f"split these modules by responsibility: {too_big}"
