"""Embedding and task-classification speed, beside plain sentence-transformers measured in the same run.

Usage::

    python benchmarks/embed_speed.py [--n 200] [--json-out out/embed_speed.json]

For each engine (``minilm``, ``static`` when its table exists, ``hashing``) it reports, in microseconds:
the latency of one ~100-token prompt on a cache miss (a new text each call) and on a cache hit, the latency of
one ~600-token prompt (MiniLM reads it as two 254-token windows), batch throughput (prompts/s, 64 distinct
~100-token prompts per call), the classifier's ``predict_proba`` on one embedding, and the whole
``FeatureExtractor.extract`` of one request. The baseline row is ``SentenceTransformer.encode`` on one prompt,
the figure in PERF.md. Timings vary between processes; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROMPT = (
    "I run a small online shop that sells handmade ceramics, and over the last three months my conversion rate "
    "has dropped from about three percent to just over one percent, even though traffic stayed the same. "
    "I changed the checkout page in April and raised shipping prices slightly. Could you help me work out "
    "which of these changes is most likely responsible, and suggest a simple experiment to confirm it? "
    "Most of my customers are in Europe and North America. Please keep the answer short and practical."
)


def _timeit(fn: Callable[[int], Any], n: int, warmup: int = 5) -> tuple[float, float]:
    for i in range(warmup):
        fn(-1 - i)
    ts = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        ts[i] = time.perf_counter() - t0
    return float(np.percentile(ts, 50) * 1e6), float(np.percentile(ts, 99) * 1e6)


def _throughput(embed: Callable[[list[str]], Any], batch: int, rounds: int) -> float:
    embed([f"{PROMPT} (warm-up {i})" for i in range(8)])
    t0 = time.perf_counter()
    for r in range(rounds):
        embed([f"{PROMPT} (batch {r}, item {i})" for i in range(batch)])
    return batch * rounds / (time.perf_counter() - t0)


def bench_engine(name: str, emb: Any, clf: Any, n: int) -> dict[str, Any]:
    from learned_router.features import FeatureExtractor
    from learned_router.types import ChatRequest

    long_prompt = " ".join([PROMPT] * 6)
    slow = name == "minilm"
    n_miss = max(20, n // 2) if slow else n
    row: dict[str, Any] = {"engine": name}
    emb.embed([PROMPT])
    row["miss_p50_us"], row["miss_p99_us"] = _timeit(lambda i: emb.embed([f"{PROMPT} ({name} miss {i})"]), n_miss)
    row["hit_p50_us"], row["hit_p99_us"] = _timeit(lambda i: emb.embed([PROMPT]), n * 5)
    row["long_p50_us"], row["long_p99_us"] = _timeit(lambda i: emb.embed([f"{long_prompt} ({i})"]),
                                                     max(10, n_miss // 4))
    row["batch_per_s"] = _throughput(emb.embed, 64, 3 if slow else 20)
    if clf is not None:
        vec = emb.embed([PROMPT])
        row["clf_p50_us"], row["clf_p99_us"] = _timeit(lambda i: clf.predict_proba(vec), n * 5)
        fx = FeatureExtractor(emb, clf)
        row["extract_p50_us"], row["extract_p99_us"] = _timeit(
            lambda i: fx.extract(ChatRequest.coerce({"messages": [{"role": "user", "content": f"{PROMPT} {i}"}]})),
            n_miss)
    return row


def bench_baseline(model: Any, n: int) -> dict[str, Any]:
    """Plain ``SentenceTransformer.encode`` of one prompt (no cache, the PERF.md measurement)."""
    row: dict[str, Any] = {"engine": "baseline: SentenceTransformer.encode"}
    n_miss = max(20, n // 2)
    row["miss_p50_us"], row["miss_p99_us"] = _timeit(lambda i: model.encode(f"{PROMPT} (base {i})"), n_miss)
    row["long_p50_us"], row["long_p99_us"] = _timeit(
        lambda i: model.encode(f"{' '.join([PROMPT] * 6)} ({i})"), max(10, n_miss // 4))
    row["batch_per_s"] = _throughput(lambda texts: model.encode(texts, batch_size=64), 64, 3)
    return row


def _probe_prompts() -> list[str]:
    """Varied prompts for the agreement check: the hand-written demo prompts (not used in distillation)."""
    path = ROOT / "data" / "sample_prompts.jsonl"
    if path.is_file():
        return [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    return [f"{PROMPT} {i}" for i in range(50)]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 10 else f"{v:.1f}"


def print_table(rows: list[dict[str, Any]], n_tokens: int) -> None:
    cols = [("miss_p50_us", "miss p50"), ("miss_p99_us", "miss p99"), ("hit_p50_us", "hit p50"),
            ("hit_p99_us", "hit p99"), ("long_p50_us", "long p50"), ("batch_per_s", "batch/s"),
            ("clf_p50_us", "clf p50"), ("clf_p99_us", "clf p99"), ("extract_p50_us", "extract p50")]
    print(f"one prompt = {n_tokens} MiniLM tokens; long = 6x that; times in microseconds; batch = prompts/s")
    head = f"{'engine':<38}" + "".join(f"{title:>12}" for _, title in cols)
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['engine']:<38}" + "".join(f"{_fmt(r.get(k)):>12}" for k, _ in cols))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from learned_router.classifier import TaskClassifier
    from learned_router.embedders import HashingEmbedder, MiniLMEmbedder, StaticEmbedder, default_static_table

    ap = argparse.ArgumentParser(description="Embedding and classifier speed.")
    ap.add_argument("--n", type=int, default=200, help="calls per latency measurement (fast engines)")
    ap.add_argument("--classifier", type=Path, default=ROOT / "models" / "task_classifier")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)

    minilm = MiniLMEmbedder().load()
    import torch

    n_tokens = len(minilm.tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    clf = TaskClassifier.load(args.classifier) if (args.classifier / "manifest.json").is_file() else None
    rows = [bench_baseline(minilm._model, args.n), bench_engine("minilm", minilm, clf, args.n)]
    if default_static_table().is_file():
        static = StaticEmbedder(default_static_table()).load()
        static_clf_dir = default_static_table().parent / "task_classifier"
        static_clf = TaskClassifier.load(static_clf_dir) if (static_clf_dir / "manifest.json").is_file() else None
        rows.append(bench_engine("static", static, static_clf, args.n))
        probe = _probe_prompts()
        agreement = float(np.mean(np.sum(static.embed(probe) * minilm.embed(probe), axis=1)))
        rows[-1]["cosine_to_minilm"] = agreement
    rows.append(bench_engine("hashing", HashingEmbedder(cache_size=4096), None, args.n))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, python {sys.version.split()[0]}")
    print_table(rows, n_tokens)
    for r in rows:
        if "cosine_to_minilm" in r:
            print(f"{r['engine']}: mean cosine to MiniLM on {len(_probe_prompts())} hand-written prompts "
                  f"{r['cosine_to_minilm']:.3f}")
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"n_tokens": n_tokens, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
