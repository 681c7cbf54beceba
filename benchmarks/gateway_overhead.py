"""What the gateway adds: the official ``openai`` client calls the same local upstream directly and through
``learned-router serve``, side by side in one run.

    python benchmarks/gateway_overhead.py [--requests 600] [--concurrent-requests 3000]
                                          [--load-requests 10000] [--json OUT]

Three processes on loopback: a simulated OpenAI-compatible upstream (zero think time), the gateway (started
with the real CLI, ``balanced`` strategy) and this client. Reported:

* concurrency 1: latency p50/p99 direct and through the gateway, and the difference (added latency);
* concurrency 32, official ``openai`` client: the same, plus requests/s and errors for both paths. On a
  small machine this measures mostly the client: it spends 3-7 ms of CPU per request on the same cores;
* concurrency 32, light load generator (``http_load.py``, ~0.05 ms of CPU per request): requests/s,
  latency and errors for both paths, so the gateway's own capacity shows beside the direct path's;
* the CPU time the gateway process spends per request under each load (the number that bounds its
  throughput per core; it grows when the cores are shared with a busy client, since every request then
  starts with cold caches), and its mean routing overhead from its ``/metrics``.

Targets: added latency p50 <= 1.5 ms and p99 <= 5 ms at concurrency 1; >= 300 req/s at concurrency 32 with
no errors. LiteLLM's proxy is measured as a second baseline only when ``litellm`` is importable.
Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import chat_request, run_load  # noqa: E402 - a sibling script, not a package

BENCH_KEY = "sk-bench-loopback-only"  # LiteLLM's proxy refuses to start without a master key; ours ignores it
TARGETS = {"added_p50_ms": 1.5, "added_p99_ms": 5.0, "rps_c32": 300.0}
MESSAGES = [{"role": "user", "content": "Summarize the benefits of unit tests in one sentence."}]
UPSTREAM = """
import uvicorn
from learned_router.simulator import SimProfile, create_sim_app
app = create_sim_app(SimProfile("bench", model="sim-1", latency_s=0.0, min_words=12, max_words=12))
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning", access_log=False, lifespan="off")
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def start(cmd: list[str], ready_url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # stderr goes to a file, not a pipe: a pipe nobody reads would block the server once full.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_ready(ready_url, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        log.seek(0)
        raise RuntimeError(f"could not start {cmd[:3]}: {log.read().decode()[-2000:]}") from None
    return proc


def cpu_s(proc: subprocess.Popen[bytes]) -> float:
    """User+system CPU seconds used so far by ``proc`` (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "mean_ms": float(arr.mean())}


def sequential(targets: dict[str, tuple[str, str]], n: int) -> dict[str, list[float]]:
    """Concurrency 1: alternate the targets request by request, so that drift in machine load hits both."""
    import openai

    clients = {name: openai.OpenAI(base_url=url, api_key=BENCH_KEY, max_retries=0,
                                   http_client=httpx.Client(timeout=30)) for name, (url, _) in targets.items()}
    times: dict[str, list[float]] = {name: [] for name in targets}
    for i in range(n + 20):
        for name, (_, model) in targets.items():
            t0 = time.perf_counter()
            clients[name].chat.completions.create(model=model, messages=MESSAGES)
            if i >= 20:  # warm-up: connections, caches
                times[name].append(time.perf_counter() - t0)
    return times


async def concurrent(url: str, model: str, total: int, workers: int) -> dict[str, Any]:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key=BENCH_KEY, max_retries=0,
                                http_client=httpx.AsyncClient(timeout=30, limits=httpx.Limits(
                                    max_connections=workers, max_keepalive_connections=workers)))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            try:
                await client.chat.completions.create(model=model, messages=MESSAGES)
                latencies.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    await asyncio.gather(*[worker() for _ in range(workers)])  # warm-up round
    remaining, latencies, errors = total, [], {}
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*[worker() for _ in range(workers)])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await client.close()
    return {"requests": total, "rps": total / elapsed, "errors": errors, **pct(latencies),
            "client_cpu_ms_per_request": 1000 * cpu / total}


async def light_load(port: int, model: str, total: int, workers: int) -> dict[str, Any]:
    request = chat_request("127.0.0.1", port, "/v1/chat/completions", {"model": model, "messages": MESSAGES},
                           api_key=BENCH_KEY)
    result = await run_load("127.0.0.1", port, request, total=total, workers=workers)
    return {"requests": total, "rps": result["rps"], "errors": result["errors"], **pct(result["latencies"]),
            "client_cpu_ms_per_request": result["client_cpu_ms_per_request"]}


def gateway_overhead_from_metrics(url: str) -> dict[str, float]:
    text = httpx.get(url, timeout=5).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        for key in ("sum", "count"):
            if line.startswith(f'learned_router_routing_overhead_seconds_{key}{{stream="false"}}'):
                values[key] = float(line.rsplit(" ", 1)[1])
    return {"mean_ms": 1000 * values["sum"] / values["count"]} if values.get("count") else {}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=600, help="requests per path at concurrency 1")
    ap.add_argument("--concurrent-requests", type=int, default=3000, help="requests per path at concurrency 32")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--load-requests", type=int, default=10000,
                    help="requests per path from the light load generator at the same concurrency (0: skip)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--litellm", default=os.environ.get("LITELLM_BIN") or shutil.which("litellm"),
                    help="the `litellm` proxy executable (from `pip install 'litellm[proxy]'`, best in a venv of "
                         "its own); when given, the LiteLLM proxy on the same upstream is a second baseline")
    args = ap.parse_args(argv)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    up_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start([sys.executable, "-c", UPSTREAM.format(port=up_port)],
                           f"http://127.0.0.1:{up_port}/health", env))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "router.yaml"
            cfg.write_text(json.dumps({
                "providers": [{"name": "bench", "kind": "openai", "base_url": f"http://127.0.0.1:{up_port}/v1",
                               "model": "sim-1", "price_in_per_mtok": 0.5, "price_out_per_mtok": 1.5}],
                "routing": {"strategy": "balanced"},
            }))
            serve = [sys.executable, "-m", "learned_router", "serve", "--config", str(cfg), "--port", str(gw_port)]
            procs.append(start(serve, f"http://127.0.0.1:{gw_port}/health", env))
            targets = {"direct": (f"http://127.0.0.1:{up_port}/v1", "sim-1"),
                       "gateway": (f"http://127.0.0.1:{gw_port}/v1", "auto")}
            litellm_note = "skipped: no `litellm` executable (pip install 'litellm[proxy]'; --litellm PATH)"
            if args.litellm:
                ll_port = free_port()
                ll_cfg = Path(tmp) / "litellm.yaml"
                ll_cfg.write_text(json.dumps({
                    "model_list": [{"model_name": "sim-1", "litellm_params": {
                        "model": "openai/sim-1", "api_base": f"http://127.0.0.1:{up_port}/v1", "api_key": "none"}}],
                    "general_settings": {"master_key": BENCH_KEY},
                    "litellm_settings": {"telemetry": False},
                }))
                procs.append(start([args.litellm, "--config", str(ll_cfg), "--port", str(ll_port)],
                                   f"http://127.0.0.1:{ll_port}/health/liveliness", env))
                targets["litellm"] = (f"http://127.0.0.1:{ll_port}/v1", "sim-1")
                litellm_note = "measured"

        seq = sequential(targets, args.requests)
        c1 = {name: pct(samples) for name, samples in seq.items()}
        added = {"p50_ms": c1["gateway"]["p50_ms"] - c1["direct"]["p50_ms"],
                 "p99_ms": c1["gateway"]["p99_ms"] - c1["direct"]["p99_ms"]}
        c32 = {}
        for i, (name, (url, model)) in enumerate(targets.items()):
            server = procs[i] if i else None  # the proxy in front of the upstream (none for direct)
            before = (cpu_s(procs[0]), cpu_s(server) if server else 0.0)
            c32[name] = asyncio.run(concurrent(url, model, args.concurrent_requests, args.concurrency))
            # the warm-up round adds `concurrency` requests to the measured ones
            n = args.concurrent_requests + args.concurrency
            c32[name]["upstream_cpu_ms_per_request"] = 1000 * (cpu_s(procs[0]) - before[0]) / n
            c32[name]["gateway_cpu_ms_per_request"] = 1000 * ((cpu_s(server) if server else 0.0) - before[1]) / n
        server_side = gateway_overhead_from_metrics(f"http://127.0.0.1:{gw_port}/metrics")  # before the light load
        light: dict[str, Any] = {}
        for i, (name, (url, model)) in enumerate(targets.items() if args.load_requests else ()):
            server = procs[i] if i else None
            before = (cpu_s(procs[0]), cpu_s(server) if server else 0.0)
            port = httpx.URL(url).port or 80
            light[name] = asyncio.run(light_load(port, model, args.load_requests, args.concurrency))
            n = args.load_requests + args.concurrency
            light[name]["upstream_cpu_ms_per_request"] = 1000 * (cpu_s(procs[0]) - before[0]) / n
            light[name]["gateway_cpu_ms_per_request"] = 1000 * ((cpu_s(server) if server else 0.0) - before[1]) / n
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    result = {"concurrency_1": {**c1, "added": added}, f"concurrency_{args.concurrency}": c32,
              f"concurrency_{args.concurrency}_light_load": light,
              "load_average_before": load_before,
              "gateway_routing_overhead": server_side, "litellm_proxy": litellm_note, "targets": TARGETS}
    print(f"concurrency 1 ({args.requests} requests per path, interleaved)")
    for name in c1:
        r = c1[name]
        print(f"  {name:8s} p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms")
    print(f"  added    p50 {added['p50_ms']:7.2f} ms   p99 {added['p99_ms']:7.2f} ms   "
          f"(targets <= {TARGETS['added_p50_ms']} / {TARGETS['added_p99_ms']} ms)")
    print(f"concurrency {args.concurrency}, official openai client ({args.concurrent_requests} requests per path)")
    for name in c32:
        r = c32[name]
        print(f"  {name:8s} {r['rps']:7.0f} req/s   p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms   "
              f"errors {sum(r['errors'].values())} {r['errors'] or ''}")
    print(f"  (target >= {TARGETS['rps_c32']:.0f} req/s through the gateway with no errors; the client process "
          f"alone caps it at ~{1000 / c32['gateway']['client_cpu_ms_per_request']:.0f} req/s here)")
    g = c32["gateway"]["gateway_cpu_ms_per_request"]
    print(f"  CPU per request through the gateway: gateway {g:.2f} ms (~{1000 / g if g else 0:.0f} req/s per "
          f"core), upstream {c32['gateway']['upstream_cpu_ms_per_request']:.2f} ms, openai client "
          f"{c32['gateway']['client_cpu_ms_per_request']:.2f} ms (direct: client "
          f"{c32['direct']['client_cpu_ms_per_request']:.2f} ms, upstream "
          f"{c32['direct']['upstream_cpu_ms_per_request']:.2f} ms)")
    if light:
        print(f"concurrency {args.concurrency}, light load generator ({args.load_requests} requests per path; its "
              f"own CPU {light['gateway']['client_cpu_ms_per_request']:.2f} ms/request)")
        for name, r in light.items():
            cpu = f", {name} {r['gateway_cpu_ms_per_request']:.2f} ms" if name != "direct" else ""
            print(f"  {name:8s} {r['rps']:7.0f} req/s   p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms   "
                  f"errors {sum(r['errors'].values())} {r['errors'] or ''}  "
                  f"(CPU per request: upstream {r['upstream_cpu_ms_per_request']:.2f} ms{cpu})")
    print(f"  machine: {os.cpu_count()} cores, load average before the run {load_before}")
    if server_side:
        print(f"gateway time outside provider calls (mean over every request of the run, from /metrics; at "
              f"concurrency 32 it includes waiting for the event loop): {server_side['mean_ms']:.2f} ms")
    if "litellm" in c1:
        ll = c1["litellm"]["p50_ms"] - c1["direct"]["p50_ms"]
        print(f"LiteLLM proxy baseline: added p50 {ll:.2f} ms at concurrency 1, {c32['litellm']['rps']:.0f} req/s at "
              f"concurrency {args.concurrency}, CPU {c32['litellm']['gateway_cpu_ms_per_request']:.2f} ms/request")
    else:
        print(f"LiteLLM proxy baseline: {litellm_note}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
