"""``learned-router demo``: five simulated providers on loopback, a few hundred sample prompts, one outage.

What happens, in order:

1. Five OpenAI-compatible servers start on 127.0.0.1 (``learned_router.simulator``), each with its own price,
   latency and per-task answer quality. Nothing leaves the machine and no API key is needed.
2. A router is built from a config dict pointing at them (``demo_config``: the same keys as a YAML file),
   using the ``balanced`` strategy with each prompt's task as a hint.
3. The sample prompts (``data/sample_prompts.jsonl``) are sent at a steady rate by a small thread pool. After
   each answer a "judge" reads the answer's true quality (the ``x-sim-quality`` header the simulator sets) and
   reports it with ``router.feedback``, so the router's live quality estimates follow reality.
4. Part-way through, one provider starts answering HTTP 500. Requests fail over to the next provider in their
   ranking, its circuit breaker opens, probes it every few seconds, and closes once the provider has
   recovered. These events are printed as they happen.
5. The analytics report is printed and written as JSON, with a PNG of cost, quality and traffic share over
   time, and a SQLite decision log.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from learned_router.errors import RouterError

__all__ = ["DemoTimings", "Sample", "demo_config", "demo_profiles", "load_samples", "run_demo"]

FAILING = "coder"
"""The provider that fails part-way through the run."""


@dataclass(frozen=True)
class DemoTimings:
    """Knobs of a demo run. The defaults take about 40 seconds for 300 requests.

    Attributes:
        rate_per_s: requests sent per second (a steady trickle, so the live view means something).
        workers: concurrent requests at most (a thread pool).
        latency_scale: multiplies every simulated latency.
        outage: the failing provider answers HTTP 500 from the first to the second fraction of the requests.
        breaker_failures: consecutive failures that open a breaker.
        breaker_reset_s: how long an open breaker waits before it lets one probe request through.
        attempt_timeout_s: time limit of one provider call.
    """

    rate_per_s: float = 9.0
    workers: int = 6
    latency_scale: float = 1.0
    outage: tuple[float, float] = (0.3, 0.6)
    breaker_failures: int = 3
    breaker_reset_s: float = 2.5
    attempt_timeout_s: float = 2.0


@dataclass(frozen=True)
class Sample:
    id: str
    task: str
    prompt: str


@dataclass
class Served:
    """What the demo keeps of one request (for the live view, the plot and the summary)."""

    index: int
    t: float
    task: str
    provider: str | None
    cost_usd: float = 0.0
    quality: float | None = None
    latency_s: float = 0.0
    failed_over_from: list[str] = field(default_factory=list)
    error: str | None = None


def default_samples_path() -> Path:
    """``data/sample_prompts.jsonl`` of a source checkout."""
    return Path(__file__).resolve().parent.parent / "data" / "sample_prompts.jsonl"


def load_samples(path: Path | None = None) -> list[Sample]:
    """Read the sample prompts (one JSON object per line with ``id``, ``task`` and ``prompt``)."""
    p = path or default_samples_path()
    if not p.is_file():
        raise FileNotFoundError(f"sample prompts not found at {p} (the demo runs from a source checkout)")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            try:
                out.append(Sample(str(row["id"]), str(row["task"]), str(row["prompt"])))
            except KeyError as exc:
                raise ValueError(f"{p}:{n}: missing key {exc}") from None
    return out


# -- the simulated providers and the router config -----------------------------------------------------------
class _Sim(NamedTuple):
    """One simulated provider: what it really does, and what its config entry declares."""

    name: str
    model: str
    price_in: float  # USD per million tokens
    price_out: float
    latency_s: float  # base latency (time to first token)
    per_token_s: float
    jitter_s: float
    quality: dict[str, float]  # true mean quality per task
    other_quality: float  # true mean quality of every other task
    declared_prior: float  # the config's quality_prior
    declared_tasks: dict[str, float]  # the config's per-task scores


_FLEET: tuple[_Sim, ...] = (
    _Sim("atlas", "atlas-large", 2.5, 10.0, 0.30, 0.004, 0.10,
         {"code": 0.92, "math": 0.92, "reasoning": 0.93, "knowledge_qa": 0.92, "creative_writing": 0.9}, 0.88,
         0.88, {"code": 0.92, "math": 0.92, "reasoning": 0.93, "knowledge_qa": 0.92}),
    _Sim("swift", "swift-mini", 0.15, 0.6, 0.04, 0.001, 0.03,
         {"chat": 0.86, "classification": 0.86, "information_extraction": 0.8, "code": 0.6, "math": 0.55,
          "reasoning": 0.55}, 0.72,
         0.72, {"chat": 0.86, "classification": 0.86, "information_extraction": 0.8, "code": 0.6,
                "math": 0.55, "reasoning": 0.55}),
    _Sim("coder", "coder-7b", 0.4, 1.6, 0.10, 0.002, 0.05,
         {"code": 0.93, "math": 0.9, "reasoning": 0.84, "creative_writing": 0.55, "translation": 0.5}, 0.7,
         0.7, {"code": 0.93, "math": 0.9, "reasoning": 0.84}),
    _Sim("lingua", "lingua-m", 0.3, 1.2, 0.08, 0.002, 0.05,
         {"translation": 0.94, "summarization": 0.9, "creative_writing": 0.88, "information_extraction": 0.84,
          "code": 0.5, "math": 0.5}, 0.74,
         0.74, {"translation": 0.94, "summarization": 0.9, "creative_writing": 0.88}),
    # Its vendor claims 0.90 on everything; the judge finds about 0.6. Feedback corrects the claim.
    _Sim("budget", "budget-base", 0.05, 0.1, 0.05, 0.001, 0.05, {"chat": 0.68}, 0.6, 0.9, {}),
)


def demo_profiles(latency_scale: float = 1.0, seed: int = 0) -> list[Any]:
    """The five simulated providers (``SimProfile``s), all healthy."""
    from learned_router.simulator import SimProfile

    return [
        SimProfile(s.name, model=s.model, latency_s=s.latency_s * latency_scale,
                   per_token_s=s.per_token_s * latency_scale, jitter_s=s.jitter_s * latency_scale,
                   quality=s.quality, default_quality=s.other_quality, quality_noise=0.08,
                   price_in_per_mtok=s.price_in, price_out_per_mtok=s.price_out, seed=seed + i, hang_s=10.0)
        for i, s in enumerate(_FLEET)
    ]


def demo_config(fleet: Any, timings: DemoTimings, log_path: Path | None) -> dict[str, Any]:
    """The router config for ``fleet`` (a started ``SimFleet``), as a dict; the same keys a YAML file has."""
    providers = []
    for s in _FLEET:
        entry = fleet.provider_entry(s.name, quality_prior=s.declared_prior,
                                     latency_prior_s=s.latency_s * timings.latency_scale + 0.05)
        if s.declared_tasks:
            entry["tasks"] = dict(s.declared_tasks)
        providers.append(entry)
    cfg: dict[str, Any] = {
        "providers": providers,
        "routing": {
            "strategy": "balanced",
            "balanced_weights": {"quality": 0.6, "cost": 0.2, "latency": 0.2},
            # 10% of requests explore a random provider, logged with exact propensities, so that
            # `learned-router train` can evaluate other policies on this traffic.
            "exploration_epsilon": 0.1,
            # The breaker reacts first; the availability filter is a slower second line of defence.
            "availability_threshold": 0.5,
            "availability_half_life_s": 10.0,
        },
        "breaker": {"failure_threshold": timings.breaker_failures,
                    "reset_timeout_s": timings.breaker_reset_s},
        "failover": {"attempt_timeout_s": timings.attempt_timeout_s,
                     "deadline_s": 4 * timings.attempt_timeout_s, "max_attempts": 3},
    }
    if log_path is not None:
        # Embed every prompt (MiniLM, offline) so that `learned-router train --log` can fit a contextual
        # policy from this log although the rules route here.
        cfg["log"] = {"path": str(log_path), "embed_for_log": True}
    return cfg


def _has_log_store() -> bool:
    import importlib.util

    return importlib.util.find_spec("learned_router.stores.sqlite") is not None


# -- the run -------------------------------------------------------------------------------------------------
class _Judge:
    """Reads the true quality of each served answer from the simulator's ``x-sim-quality`` header.

    An httpx response hook runs in the thread that sent the request, and each worker thread handles one
    request at a time, so the last response seen by a thread belongs to the request it is serving."""

    def __init__(self) -> None:
        self._local = threading.local()

    def hook(self, response: Any) -> None:
        q = response.headers.get("x-sim-quality")
        self._local.last = (response.headers.get("x-sim-provider"), float(q) if q is not None else None)

    def reset(self) -> None:
        self._local.last = (None, None)

    def quality_of(self, provider: str) -> float:
        seen, quality = getattr(self._local, "last", (None, None))
        if seen != provider or quality is None:
            raise RuntimeError(f"no x-sim-quality header from {provider} (last response came from {seen})")
        return quality


def _serve_one(router: Any, judge: _Judge, index: int, sample: Sample, started: float) -> Served:
    judge.reset()
    request = {"messages": [{"role": "user", "content": sample.prompt}], "task_hint": sample.task,
               "request_id": f"demo-{index:04d}-{sample.id}"}
    try:
        comp = router.complete(request)
    except RouterError as err:
        return Served(index, time.monotonic() - started, sample.task, None,
                      error=f"{type(err).__name__}: {err}")
    quality = judge.quality_of(comp.provider)
    router.feedback(comp.request_id, quality, source="judge")
    failed = [a.arm.split("::")[0] for a in comp.outcome.attempts if a.status == "error"]
    return Served(index, time.monotonic() - started, sample.task, comp.provider, comp.cost_usd, quality,
                  comp.latency_s, failed)


def _order(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` samples in a seeded order with a steady task mix: rounds of one prompt of each task (tasks in a
    shuffled order each round), so that a change in traffic share reflects routing, not a burst of one task.
    Each task's prompts are shuffled and reused when they run out."""
    rng = np.random.default_rng(seed)
    by_task: dict[str, list[Sample]] = {}
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
    queues: dict[str, list[Sample]] = {task: [] for task in by_task}
    tasks = sorted(by_task)
    out: list[Sample] = []
    while len(out) < n:
        for i in rng.permutation(len(tasks)):
            task = tasks[i]
            if not queues[task]:
                queues[task] = [by_task[task][j] for j in rng.permutation(len(by_task[task]))]
            out.append(queues[task].pop())
    return out[:n]


def run_demo(requests: int = 300, out_dir: Path = Path("out/demo"), seed: int = 0, *,
             timings: DemoTimings | None = None, console: Any = None, samples_path: Path | None = None,
             live: bool = True) -> int:
    """Run the demo; returns the process exit code (0 when every request was served).

    Args:
        requests: how many sample prompts to send (the list is cycled when shorter).
        out_dir: where ``demo.png``, ``report.json`` and ``decisions.sqlite`` are written.
        seed: order of the prompts and the simulators' latency jitter.
        timings: rate, concurrency, latencies, outage window and breaker settings (``DemoTimings()``).
        console: a ``rich.console.Console`` to print to.
        samples_path: another prompt file in the same format.
        live: show the live progress view (the events and the report are printed either way).
    """
    import httpx
    from rich.console import Console

    from learned_router.demo_view import LiveView
    from learned_router.router import Router
    from learned_router.sim_fleet import SimFleet

    t = timings or DemoTimings()
    console = console or Console()
    if requests < 1:
        console.print("[red]--requests must be at least 1[/]")
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    order = _order(load_samples(samples_path), requests, seed)
    outage_from, outage_to = (round(f * requests) for f in t.outage)
    log_path = out_dir / "decisions.sqlite" if _has_log_store() else None
    if log_path is not None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{log_path}{suffix}").unlink(missing_ok=True)

    judge = _Judge()
    http = httpx.Client(limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
                        event_hooks={"response": [judge.hook]})
    fleet = SimFleet(demo_profiles(t.latency_scale, seed))
    with fleet, http:
        cfg = demo_config(fleet, t, log_path)
        router = Router.from_config(cfg, seed=seed, http=http)
        view = LiveView(console, router, fleet, total=requests, failing=FAILING, live=live)
        view.intro(cfg, outage_from, outage_to, t)
        if cfg.get("log", {}).get("embed_for_log"):
            _warm_up(router, console)
        results: list[Served] = []
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=t.workers, thread_name_prefix="demo") as pool, view:
                results = _drive(router, judge, pool, order, t, started, view, fleet, outage_from, outage_to)
        finally:
            router.close()
        elapsed = time.monotonic() - started
        report = router.report()
    report["demo"] = _summary(results, view, elapsed, requests, outage_from, outage_to, t)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    from learned_router.demo_plot import plot_demo

    png = plot_demo(results, view.events, view.outage_window, [s.name for s in _FLEET],
                    out_dir / "demo.png", failing=FAILING)
    return view.finish(report, png, out_dir / "report.json", log_path)


def _warm_up(router: Any, console: Any) -> None:
    """Load the embedder before the clock starts (routing a request embeds it; nothing is sent)."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is imported
    with console.status("loading the MiniLM embedder (prompts are embedded for the decision log)"):
        started = time.monotonic()
        router.route({"messages": [{"role": "user", "content": "Hello!"}], "task_hint": "chat"})
    console.print(f"[dim]embedder loaded in {time.monotonic() - started:.1f} s[/]\n")


def _drive(router: Any, judge: _Judge, pool: ThreadPoolExecutor, order: Sequence[Sample], t: DemoTimings,
           started: float, view: Any, fleet: Any, outage_from: int, outage_to: int) -> list[Served]:
    """Send ``order`` at ``t.rate_per_s``, switch the outage on and off, and feed the live view."""
    results: list[Served] = []
    pending: set[Future[Served]] = set()
    try:
        _loop(router, judge, pool, order, t, started, view, fleet.profiles[FAILING], outage_from, outage_to,
              results, pending)
    except BaseException:  # Ctrl-C: do not send what is still queued
        for fut in pending:
            fut.cancel()
        raise
    results.sort(key=lambda s: s.index)
    return results


def _loop(router: Any, judge: _Judge, pool: ThreadPoolExecutor, order: Sequence[Sample], t: DemoTimings,
          started: float, view: Any, failing: Any, outage_from: int, outage_to: int, results: list[Served],
          pending: set[Future[Served]]) -> None:
    sent = 0
    while sent < len(order) or pending:
        now = time.monotonic()
        while sent < len(order) and now >= started + sent / t.rate_per_s and len(pending) < 4 * t.workers:
            if sent == outage_from and outage_from < outage_to:
                failing.set_mode("error500")
                view.outage(True, now - started)
            if sent == outage_to and outage_from < outage_to:
                failing.set_mode("ok")
                view.outage(False, now - started)
            pending.add(pool.submit(_serve_one, router, judge, sent, order[sent], started))
            sent += 1
        done: set[Future[Served]] = set()
        if pending:
            done = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED).done
            pending.difference_update(done)
        else:
            time.sleep(max(0.0, min(0.05, started + sent / t.rate_per_s - time.monotonic())))
        for fut in done:
            served = fut.result()
            results.append(served)
            view.served(served)
        view.tick(time.monotonic() - started)


def _summary(results: Sequence[Served], view: Any, elapsed: float, requests: int, outage_from: int,
             outage_to: int, t: DemoTimings) -> dict[str, Any]:
    ok = [r for r in results if r.provider is not None]
    qualities = [r.quality for r in ok if r.quality is not None]
    return {
        "requests": requests,
        "served": len(ok),
        "failed": len(results) - len(ok),
        "failovers": sum(1 for r in ok if r.failed_over_from),
        "mean_quality": round(float(np.mean(qualities)), 4) if qualities else None,
        "total_cost_usd": round(sum(r.cost_usd for r in ok), 8),
        "elapsed_s": round(elapsed, 2),
        "failing_provider": FAILING,
        "outage_requests": [outage_from, outage_to],
        "outage_window_s": view.outage_window,
        "breaker_events": [{"t": round(e[0], 3), "provider": e[1], "event": e[2]} for e in view.events],
        "live_quality": view.live_quality(),
        "during_outage": _window([r for r in ok if outage_from <= r.index < outage_to]),
        "outside_outage": _window([r for r in ok if not outage_from <= r.index < outage_to]),
        "timings": asdict(t),
    }


def _window(rows: Sequence[Served]) -> dict[str, Any]:
    qualities = [r.quality for r in rows if r.quality is not None]
    return {"requests": len(rows),
            "mean_quality": round(float(np.mean(qualities)), 4) if qualities else None,
            "cost_per_1k_usd": round(1000 * sum(r.cost_usd for r in rows) / len(rows), 6) if rows else None}
