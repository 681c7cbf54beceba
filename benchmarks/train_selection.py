"""Does `train`'s hyper-parameter selection route better than fixed settings? Measured against the truth.

For each dataset, log size and seed: traffic on the train split is simulated under a logging policy
(by default uniform: one random model per decision), with quality fed back and the default utility weights
(quality 1, cost 0.05 per USD per 1k requests, latency 0.05 per s), and read back from a real SQLite
decision log, as `train` reads it. Policies are fitted on that log only, then their greedy decisions on
the *test* split are scored with the full outcome matrix (true utility per request):

* ``fixed (32, α=1)``: the settings `train` used before it cross-validated (32 PCA components, prior
  precision 1, one shared prior mean);
* ``cv error``: width and α chosen by the squared error of the served arm's quality;
* ``cv value``: what `train` does now: chosen by the held-out value of the decisions, one-standard-error rule;
* ``best arm (log)``: the model with the best mean logged utility, always; ``best arm (truth)``: the
  model with the best true test utility (a bound no fixed choice can beat).

Usage: ``python benchmarks/train_selection.py [--datasets a,b] [--sizes 500,2000,6000] [--seeds 3]
[--logging-policy epsilon-greedy-balanced]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from learned_router.bench.dataset import cached_embeddings, load_dataset  # noqa: E402
from learned_router.embedders import make_embedder  # noqa: E402
from learned_router.stores import SqliteDecisionLog  # noqa: E402
from learned_router.strategies import selection as S  # noqa: E402
from learned_router.strategies.thompson import fit_thompson  # noqa: E402
from training import fitting as F  # noqa: E402
from training.logdata import load_logged  # noqa: E402
from training.simulate import simulate_into  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
COLUMNS = ("fixed (32, α=1)", "cv error", "cv value", "best arm (log)", "best arm (truth)")


def _one(folder: Path, n: int, seed: int, embedder: object, policy: str) -> dict[str, float]:
    data = load_dataset(folder)
    with tempfile.TemporaryDirectory() as tmp:
        with SqliteDecisionLog(Path(tmp) / "log.db") as store:
            simulate_into(store, folder, policy=policy, n=n, seed=seed, embedder=embedder,
                          cache_dir=ROOT / "out" / "cache")
        with SqliteDecisionLog(Path(tmp) / "log.db") as store:
            log = load_logged(store.scan())
    E = cached_embeddings(data, embedder, ROOT / "out" / "cache")
    tr, te = np.flatnonzero(data.is_train), np.flatnonzero(~data.is_train)
    col = [data.models.index(a.split("::", 1)[1]) for a in log.arms]  # log arm -> dataset column
    truth = data.quality[te][:, col] - 0.05 * data.cost_usd[te][:, col] * 1000 - 0.05 * data.latency_s[te][:, col]
    out_tokens = data.output_tokens[tr].mean(axis=0)[col]
    est = (data.input_tokens[te, None] * data.price_in_per_mtok[col] + out_tokens * data.price_out_per_mtok[col]) / 1e6
    offsets = -0.05 * est * 1000 - 0.05 * log.arm_latency()[None, :]  # as the router predicts cost and latency

    def score(policy: object) -> float:
        X = policy.transform.transform(E[te], data.input_tokens[te], None)  # type: ignore[attr-defined]
        choice = (policy.model.mean(X) + offsets).argmax(axis=1)  # type: ignore[attr-defined]
        return float(truth[np.arange(len(te)), choice].mean())

    rows = np.arange(log.n)
    use = F.usable_rows(log, rows)
    old = fit_thompson(log.embeddings[use], log.input_tokens[use], log.arms, log.served[use], log.quality[use],
                       priors=dict.fromkeys(log.arms, float(log.quality[use].mean())), n_components=32, alpha=1.0)
    result = {COLUMNS[0]: score(old)}
    # squared error: the same candidates scored by the served arm's quality error
    sel = S.select(F.train_inputs(log, use), log.quality[use], F.arm_priors(log, rows), arms=log.served[use],
                   components=F.COMPONENTS, alphas=S.ALPHA_GRID, max_dim=45, seed=seed)
    by_error = {"n_components": sel.n_components, "n_clusters": sel.n_clusters, "alpha": sel.alpha}
    result[COLUMNS[1]] = score(F.fit_policy(log, rows, by_error, scale=0.3, version=""))
    # what train does
    chosen = F.choose_hyperparameters(log, rows, n_components=None, alpha=None, max_dim=45, seed=seed)
    result[COLUMNS[2]] = score(F.fit_policy(log, rows, chosen, scale=0.3, version=""))
    u = log.utility()
    logged_mean = [float(np.nanmean(u[log.served == j])) if (log.served == j).any() else -np.inf
                   for j in range(len(log.arms))]
    result[COLUMNS[3]] = float(truth[:, int(np.argmax(logged_mean))].mean())
    result[COLUMNS[4]] = float(truth.mean(axis=0).max())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="routerbench_subset,zeroeval,mmlu_pro,routellm_gsm8k")
    p.add_argument("--sizes", default="500,2000,6000", help="logged decisions per run")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--embedder", default="static", help="static (default, fast) or minilm")
    p.add_argument("--logging-policy", default="uniform",
                   help="uniform, or another of training.simulate.LOGGING_POLICIES (e.g. epsilon-greedy-balanced)")
    args = p.parse_args(argv)
    embedder = make_embedder(args.embedder, cache_size=0)
    runs: list[dict[str, float]] = []
    print(f"{'dataset':20s} {'n':>5s} {'seed':>4s} " + " ".join(f"{c:>17s}" for c in COLUMNS))
    for name in args.datasets.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            for seed in range(args.seeds):
                r = _one(DATA / name, n, seed, embedder, args.logging_policy)
                runs.append(r)
                print(f"{name:20s} {n:5d} {seed:4d} " + " ".join(f"{r[c]:17.4f}" for c in COLUMNS), flush=True)
    print(f"\nmean true utility per request over {len(runs)} runs:")
    for c in COLUMNS:
        print(f"  {c:17s} {statistics.mean(r[c] for r in runs):.4f}")
    for c in COLUMNS[:2] + COLUMNS[3:4]:
        d = [r[COLUMNS[2]] - r[c] for r in runs]
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
        print(f"  cv value - {c}: {statistics.mean(d):+.4f} ± {se:.4f} (standard error)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
