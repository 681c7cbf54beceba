"""How well do IPS, SNIPS and DR recover a policy's value from logged traffic? Measured against the truth.

On each dataset (dense prompt × model outcomes), a *target* policy is fitted on the train split: the
learned Thompson policy (MiniLM embeddings, per-arm Bayesian linear quality models, utility weights
quality 1, cost 0.05 per USD per 1k requests, latency 0.05 per s). Its probabilities over the models on
every test prompt are fixed once (Monte-Carlo, 4,000 draws). For each seed, traffic on the test split is
simulated under a known *logging* policy (epsilon-greedy around the balanced rule, epsilon 0.3), and the
target's value is estimated from that log alone. The truth is the target's exact value on the same
prompts from the full outcome matrix. The DR reward model is the target's own posterior mean (fitted on
the train split, never on test outcomes).

Reports bias, RMSE, coverage of the 95% intervals, mean interval width and ESS over the seeds.

Usage: ``python benchmarks/ope_estimators.py [--seeds 50] [--n 4000] [--json out/ope.json]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from learned_router.bench.dataset import cached_embeddings, load_dataset  # noqa: E402
from learned_router.embedders import MiniLMEmbedder  # noqa: E402
from learned_router.ope import evaluate_all  # noqa: E402
from learned_router.strategies.thompson import fit_thompson  # noqa: E402
from training.simulate import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
WEIGHTS = (1.0, 0.05, 0.05)


def _target(data, emb, seed: int):
    """Fixed target probabilities (n_prompts, K) and the reward model's quality predictions (n_prompts, K)."""
    tr = np.flatnonzero(data.is_train)
    k = data.n_models
    rows = np.repeat(tr, k)
    arms = np.tile(np.arange(k), len(tr))
    policy = fit_thompson(emb[rows], data.input_tokens[rows], list(data.models), arms, data.quality[rows, arms],
                          n_components=32, alpha=1.0, scale=0.3)
    X = policy.transform.transform(emb, data.input_tokens)
    m = policy.model
    mean = X @ m.mu_.T
    std = m.scale * np.sqrt(np.maximum(np.einsum("nd,kde,ne->nk", X, m.Ainv_, X), 0))
    out_est = data.output_tokens[tr].mean(axis=0)
    est_cost = (data.input_tokens[:, None] * data.price_in_per_mtok + out_est * data.price_out_per_mtok) / 1e6
    est_lat = data.ttft_s + out_est / data.output_tokens_per_s
    offsets = -WEIGHTS[1] * est_cost * 1000 - WEIGHTS[2] * est_lat[None, :]
    rng = np.random.default_rng(seed)
    probs = np.zeros_like(mean)
    for s in range(0, len(mean), 500):
        u = WEIGHTS[0] * (mean[s:s + 500] + std[s:s + 500] * rng.standard_normal((4000, *mean[s:s + 500].shape)))
        best = (u + offsets[s:s + 500]).argmax(axis=2)
        for j in range(k):
            probs[s:s + 500, j] = (best == j).mean(axis=0)
    return probs, np.clip(mean, 0, 1)


def run_dataset(name: str, seeds: int, n: int, epsilon: float) -> dict:
    data = load_dataset(DATA / name)
    emb = cached_embeddings(data, MiniLMEmbedder(), ROOT / "out" / "cache")
    target, q_model = _target(data, emb, seed=12345)
    utility = WEIGHTS[0] * data.quality - WEIGHTS[1] * data.cost_usd * 1000 - WEIGHTS[2] * data.latency_s
    out_est = data.output_tokens[data.is_train].mean(axis=0)
    est_cost = (data.input_tokens[:, None] * data.price_in_per_mtok + out_est * data.price_out_per_mtok) / 1e6
    est_lat = data.ttft_s + out_est / data.output_tokens_per_s
    u_model = WEIGHTS[0] * q_model - WEIGHTS[1] * est_cost * 1000 - WEIGHTS[2] * est_lat[None, :]
    metrics = {"utility": (utility, u_model), "quality": (data.quality, q_model)}
    res: dict = {m: {e: {"err": [], "covered": [], "width": [], "ess": []} for e in ("ips", "snips", "dr")}
                 for m in metrics}
    for seed in range(seeds):
        sim = simulate(data, emb, policy="epsilon-greedy-balanced", n=n, split="test", seed=seed, epsilon=epsilon)
        p, a = sim.prompt_index, sim.actions
        rows = np.arange(len(a))
        for metric, (truth_matrix, model) in metrics.items():
            truth = float((target[p] * truth_matrix[p]).sum(axis=1).mean())
            est = evaluate_all(truth_matrix[p, a], sim.probs[rows, a], a, target[p], model[p], logged_probs=sim.probs)
            for e, v in est.items():
                r = res[metric][e]
                r["err"].append(v.value - truth)
                r["covered"].append(v.ci_low <= truth <= v.ci_high)
                r["width"].append(v.ci_high - v.ci_low)
                r["ess"].append(v.ess)
    summary = {}
    for metric, per in res.items():
        summary[metric] = {e: {"bias": float(np.mean(r["err"])), "rmse": float(np.sqrt(np.mean(np.square(r["err"])))),
                               "coverage": float(np.mean(r["covered"])), "mean_ci_width": float(np.mean(r["width"])),
                               "mean_ess": float(np.mean(r["ess"]))} for e, r in per.items()}
    return {"dataset": name, "n_test_prompts": int((~data.is_train).sum()), "models": data.n_models,
            "decisions_per_seed": n, "seeds": seeds, "logging_policy": f"epsilon-greedy-balanced (epsilon {epsilon})",
            "target_policy": "learned Thompson policy fitted on the train split", "results": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["routerbench_subset", "zeroeval"])
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--n", type=int, default=4000, help="logged decisions per seed")
    ap.add_argument("--epsilon", type=float, default=0.3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = [run_dataset(d, args.seeds, args.n, args.epsilon) for d in args.datasets]
    for r in results:
        print(f"\n{r['dataset']}: {r['seeds']} seeds x {r['decisions_per_seed']} decisions, {r['models']} models, "
              f"{r['logging_policy']} -> {r['target_policy']}")
        print(f"{'metric':9} {'estimator':9} {'bias':>10} {'RMSE':>10} {'coverage':>9} {'CI width':>10} {'ESS':>8}")
        for metric, per in r["results"].items():
            for e, s in per.items():
                print(f"{metric:9} {e:9} {s['bias']:+10.5f} {s['rmse']:10.5f} {s['coverage']:9.0%} "
                      f"{s['mean_ci_width']:10.5f} {s['mean_ess']:8.0f}")
    print(f"\n{time.perf_counter() - t0:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
