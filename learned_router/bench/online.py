"""Online mode: the learned router replays the prompts as a stream and learns only from its own choices.

The stream is the train split in a random order, then the test split. At each prompt the router draws a
Thompson sample of every model's quality, picks the model with the best sampled utility
``q - w_cost · ĉ`` (ĉ: predicted USD per 1,000 such requests from models.json prices and a running mean of
each model's observed output tokens), and then sees that one model's quality, which it learns from. Test
prompts are scored on the choices made while streaming (their outcomes only arrive as feedback after the
choice). The context transform (PCA) is fitted on the train prompts' embeddings only, which needs no outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from learned_router.bench.dataset import BenchDataset
from learned_router.strategies.context import ContextTransform
from learned_router.strategies.linear_ts import LinearTS

__all__ = ["OnlineRun", "run_online"]

Array = NDArray[np.float64]


@dataclass
class OnlineRun:
    """The test-split choices of one stream and, when recorded, its learning curve."""

    test_choices: NDArray[np.int64]
    curve: dict[str, list[float]] = field(default_factory=dict)


def run_online(data: BenchDataset, X: Array, train_rows: NDArray[np.int64], test_rows: NDArray[np.int64],
               w_cost: float, *, seed: int, alpha: float = 1.0, scale: float = 0.5, prior: float = 0.5,
               record_curve: bool = False, curve_points: int = 200) -> OnlineRun:
    """Stream train (shuffled) then test through a fresh linear TS router at trade-off ``w_cost``.

    ``X`` holds the context vectors of every prompt (rows index into it). The learning curve (over the
    train stream) has cumulative utility of the router, of the best fixed model in hindsight and of the
    oracle, and the regrets against both.
    """
    rng = np.random.default_rng(seed)
    k = data.n_models
    model = LinearTS(k, X.shape[1], np.full(k, prior), alpha=alpha, scale=scale)
    order = np.concatenate([rng.permutation(train_rows), test_rows])
    n_train = len(train_rows)
    tok_sum = np.zeros(k)
    tok_n = np.zeros(k)
    tin = data.input_tokens
    true_cost_1k = data.cost_usd * 1000.0
    earned = np.empty(n_train)
    test_choices = np.empty(len(test_rows), dtype=np.int64)
    for t, i in enumerate(order):
        x = X[i]
        overall = tok_sum.sum() / tok_n.sum() if tok_n.sum() else np.log1p(200.0)
        mean_log_tok = (tok_sum + overall) / (tok_n + 1.0)
        c_hat = (tin[i] * data.price_in_per_mtok + np.expm1(mean_log_tok) * data.price_out_per_mtok) / 1e3
        a = int(np.argmax(model.sample(x, rng) - w_cost * c_hat))
        q = float(data.quality[i, a])
        model.partial_fit(a, x, q)
        tok_sum[a] += np.log1p(data.output_tokens[i, a])
        tok_n[a] += 1.0
        if t < n_train:
            earned[t] = q - w_cost * true_cost_1k[i, a]
        else:
            test_choices[t - n_train] = a
    run = OnlineRun(test_choices)
    if record_curve and n_train:
        stream = order[:n_train]
        util = data.quality[stream] - w_cost * true_cost_1k[stream]
        best_fixed = util[:, int(np.argmax(util.sum(axis=0)))]
        oracle = util.max(axis=1)
        idx = np.unique(np.linspace(1, n_train, min(curve_points, n_train)).astype(int)) - 1
        cum = np.cumsum(earned)
        cum_fixed = np.cumsum(best_fixed)
        cum_oracle = np.cumsum(oracle)
        run.curve = {
            "step": (idx + 1).tolist(),
            "cum_utility": cum[idx].tolist(),
            "cum_utility_best_fixed": cum_fixed[idx].tolist(),
            "cum_utility_oracle": cum_oracle[idx].tolist(),
            "regret_vs_best_fixed": (cum_fixed - cum)[idx].tolist(),
            "regret_vs_oracle": (cum_oracle - cum)[idx].tolist(),
            "w_cost": [w_cost],
        }
    return run


def online_transform(embeddings: NDArray[np.float32], input_tokens: Array, train_rows: NDArray[np.int64],
                     n_components: int = 32) -> ContextTransform:
    """The context transform of the online router: PCA of the train prompts' embeddings (no outcomes)."""
    return ContextTransform(n_components).fit(embeddings[train_rows], input_tokens[train_rows])
