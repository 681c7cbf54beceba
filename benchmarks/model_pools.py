"""Is the learned router above kNN on pools of models it was not designed on? Random pools, same splits.

For each dataset and run: 3 to 8 of its models drawn at random (all of them when it has 3 or fewer) and
up to ``--prompts`` prompts drawn at random, with the dataset's own train/test split; ``bench`` (offline)
is run on that subset and the frontier areas of the learned router, kNN and per-model regression are
compared. Prints each run and the mean difference with its standard error.

Usage: ``python benchmarks/model_pools.py [--datasets mmlu_pro,zeroeval,routerbench_subset] [--runs 4]
[--prompts 3000] [--embedder static] [--data ../shared/data]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from learned_router.bench.dataset import cached_embeddings, load_dataset  # noqa: E402
from learned_router.bench.run import make_embedder, run_bench  # noqa: E402

ROUTERS = ("learned (offline)", "knn", "regression")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="mmlu_pro,zeroeval,routerbench_subset")
    p.add_argument("--runs", type=int, default=4, help="random pools per dataset")
    p.add_argument("--prompts", type=int, default=3000, help="prompts per pool (at most)")
    p.add_argument("--embedder", default="static", help="minilm, static or hashing")
    p.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    p.add_argument("--cache", default="out/cache")
    args = p.parse_args()

    embedder = make_embedder(args.embedder)
    diffs: dict[str, list[float]] = {"knn": [], "regression": []}
    for name in args.datasets.split(","):
        data = load_dataset(Path(args.data) / name)
        E = cached_embeddings(data, embedder, args.cache)  # the whole dataset once; pools take rows of it
        for run in range(args.runs):
            rng = np.random.default_rng(run)
            k = data.n_models if data.n_models <= 3 else int(rng.integers(3, min(8, data.n_models) + 1))
            models = np.sort(rng.choice(data.n_models, k, replace=False))
            rows = np.sort(rng.choice(len(data.prompts), min(len(data.prompts), args.prompts), replace=False))
            result = run_bench(data.take(rows, models), embeddings=E[rows], embedder=embedder, seed=run,
                               progress=False, cache_dir=None)
            area = {r: result.routers[r].metrics["area"] for r in ROUTERS}
            for base in diffs:
                diffs[base].append(area["learned (offline)"] - area[base])
            print(f"{name} run {run}: {k} models, {len(rows)} prompts; area "
                  + ", ".join(f"{r} {a:.4f}" for r, a in area.items()), flush=True)
    for base, d in diffs.items():
        arr = np.array(d)
        se = arr.std(ddof=1) / np.sqrt(len(arr)) if len(arr) > 1 else float("nan")
        print(f"learned - {base}: {arr.mean():+.4f} ± {se:.4f} (standard error), learned at or above in "
              f"{int((arr >= 0).sum())} of {len(arr)}")


if __name__ == "__main__":
    main()
