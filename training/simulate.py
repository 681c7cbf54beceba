"""Simulated logged traffic from a routing dataset (dense prompt × model outcomes, see ``data/README.md``).

A *logging policy* gives every prompt a probability over the dataset's models; the simulator draws the
chosen model from it, reads that model's real outcome (quality, cost, latency) from the matrix, and logs a
:class:`~learned_router.stores.DecisionRecord` with the full propensity vector and the prompt embedding, as
the router would. Since the matrix is dense, the true value of any other policy on the same prompts is known,
which is what ``benchmarks/ope_estimators.py`` compares the off-policy estimates against.

Logging policies (``LOGGING_POLICIES``):

* ``uniform``: every model with probability 1/K.
* ``epsilon-greedy-<rule>`` (``balanced``, ``cost``, ``quality``, ``latency``): the rule strategy's first
  choice with probability 1 - epsilon, otherwise a uniformly random model.
* ``softmax-quality``: probabilities proportional to exp(quality prior / temperature) (context-free).

The rule strategies see a catalogue built from ``models.json`` (prices, latency profile) and each model's
mean quality on the train split as its quality prior, as a production router would be configured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from learned_router.bench.dataset import BenchDataset, cached_embeddings, load_dataset
from learned_router.config import ProviderConfig
from learned_router.stores import DecisionRecord, encode_embedding
from learned_router.strategies import RULES
from learned_router.strategies.base import ArmView, Context, Features
from learned_router.types import ChatRequest, Weights, arm_id

__all__ = ["LOGGING_POLICIES", "SimulatedLog", "catalogue", "logging_probabilities", "rule_choice",
           "simulate", "simulate_into"]

Array = NDArray[np.float64]
LOGGING_POLICIES = ("uniform", "epsilon-greedy-balanced", "epsilon-greedy-cost", "epsilon-greedy-quality",
                    "epsilon-greedy-latency", "softmax-quality")


@dataclass(frozen=True)
class SimulatedLog:
    """Logged traffic as arrays (row i is one decision on prompt ``prompt_index[i]``)."""

    data: BenchDataset
    arms: tuple[str, ...]
    prompt_index: NDArray[np.int64]
    actions: NDArray[np.int64]
    probs: Array  # (n, K) logging distribution
    embeddings: NDArray[np.float32]  # (n_prompts, d)
    policy: str

    @property
    def rewards_quality(self) -> Array:
        return self.data.quality[self.prompt_index, self.actions]

    @property
    def propensities(self) -> Array:
        return self.probs[np.arange(len(self.actions)), self.actions]


def catalogue(data: BenchDataset) -> list[ArmView]:
    """Arm views for the rule strategies: prices and latency from models.json, quality from the train split."""
    train = data.is_train if data.is_train.any() else np.ones(len(data.prompts), dtype=bool)
    mean_q = data.quality[train].mean(axis=0)
    mean_out = data.output_tokens[train].mean(axis=0)
    mean_in = float(data.input_tokens[train].mean())
    views = []
    for j, model in enumerate(data.models):
        latency = float(data.ttft_s[j] + mean_out[j] / data.output_tokens_per_s[j])
        cfg = ProviderConfig(name=data.name, kind="openai", base_url="http://127.0.0.1:9/v1", model=model,
                             price_in_per_mtok=float(data.price_in_per_mtok[j]),
                             price_out_per_mtok=float(data.price_out_per_mtok[j]),
                             quality_prior=float(np.clip(mean_q[j], 0, 1)), latency_prior_s=max(latency, 1e-3))
        est = (mean_in * data.price_in_per_mtok[j] + mean_out[j] * data.price_out_per_mtok[j]) / 1e6
        views.append(ArmView(arm=arm_id(data.name, model), provider=cfg, quality=cfg.quality_prior,
                             latency_s=cfg.latency_prior_s, availability=1.0, in_flight=0, est_cost_usd=float(est)))
    return views


def rule_choice(rule: str, views: list[ArmView], weights: Weights | None = None) -> int:
    """The index (in ``views``) of the arm a rule strategy puts first, for a context-free request."""
    strategy = RULES[rule]()
    ctx = Context(request=ChatRequest.coerce({"messages": [{"role": "user", "content": "x"}]}),
                  features=Features(input_tokens=1, output_tokens_est=1), weights=weights or Weights())
    first = strategy.select(ctx, views, np.random.default_rng(0)).arms[0]
    return [v.arm for v in views].index(first)


def logging_probabilities(policy: str, data: BenchDataset, n_rows: int, *, epsilon: float = 0.2,
                          temperature: float = 0.1) -> Array:
    """The (n_rows, K) logging distribution of a named policy (all are context-free)."""
    k = data.n_models
    if policy == "uniform":
        row = np.full(k, 1.0 / k)
    elif policy.startswith("epsilon-greedy-") and policy.removeprefix("epsilon-greedy-") in RULES:
        row = np.full(k, epsilon / k)
        row[rule_choice(policy.removeprefix("epsilon-greedy-"), catalogue(data))] += 1.0 - epsilon
    elif policy == "softmax-quality":
        q = np.array([v.quality for v in catalogue(data)])
        z = np.exp((q - q.max()) / temperature)
        row = z / z.sum()
    else:
        raise ValueError(f"unknown logging policy {policy!r}; known: {', '.join(LOGGING_POLICIES)}")
    return np.tile(row, (n_rows, 1))


def simulate(data: BenchDataset, embeddings: NDArray[np.float32], *, policy: str = "uniform",
             n: int | None = None, split: str = "train", seed: int = 0, epsilon: float = 0.2) -> SimulatedLog:
    """Draw ``n`` decisions (default: every prompt of ``split`` once, in random order) under ``policy``."""
    rng = np.random.default_rng(seed)
    pool = {"train": np.flatnonzero(data.is_train), "test": np.flatnonzero(~data.is_train),
            "all": np.arange(len(data.prompts))}[split]
    if len(pool) == 0:
        raise ValueError(f"the dataset {data.name} has no {split} prompts")
    idx = rng.permutation(pool) if n is None else rng.choice(pool, size=n, replace=n > len(pool))
    probs = logging_probabilities(policy, data, len(idx), epsilon=epsilon)
    cum = probs.cumsum(axis=1)
    actions = np.minimum((cum < rng.random(len(idx))[:, None]).sum(axis=1), data.n_models - 1)
    arms = tuple(arm_id(data.name, m) for m in data.models)
    return SimulatedLog(data, arms, idx.astype(np.int64), actions.astype(np.int64), probs, embeddings, policy)


def simulate_into(store: Any, dataset_dir: str | Path, *, policy: str = "uniform", n: int | None = None,
                  seed: int = 0, embedder: Any = None, cache_dir: str | Path | None = None, split: str = "train",
                  weights: Weights | None = None, start_ts: float = 1.7e9, feedback_rate: float = 1.0,
                  epsilon: float = 0.2, on_progress: Callable[[int, int], None] | None = None) -> SimulatedLog:
    """Simulate traffic from ``dataset_dir`` and append one DecisionRecord per decision to ``store``.

    Args:
        store: a decision log (``append``/``flush``).
        embedder: embeds the prompts (default: the hashing embedder, 384 dimensions).
        cache_dir: where prompt embeddings are cached between runs.
        weights: the trade-off weights logged with each decision (default: quality 1, cost 0.05, latency 0.05).
        feedback_rate: the share of decisions that get their quality as feedback.
    """
    from learned_router.embedders import HashingEmbedder

    data = load_dataset(dataset_dir)
    embedder = embedder or HashingEmbedder(384)
    emb = cached_embeddings(data, embedder, cache_dir)
    sim = simulate(data, emb, policy=policy, n=n, split=split, seed=seed, epsilon=epsilon)
    rng = np.random.default_rng(seed + 1)
    w = weights or Weights(1.0, 0.05, 0.05)
    wdict = {"quality": w.quality, "cost": w.cost, "latency": w.latency}
    train = data.is_train if data.is_train.any() else np.ones(len(data.prompts), dtype=bool)
    out_est = data.output_tokens[train].mean(axis=0)
    tokens_in = data.input_tokens
    for i, (p, a) in enumerate(zip(sim.prompt_index.tolist(), sim.actions.tolist(), strict=True)):
        arm = sim.arms[a]
        est_cost = {sim.arms[j]: float((tokens_in[p] * data.price_in_per_mtok[j]
                                        + out_est[j] * data.price_out_per_mtok[j]) / 1e6) for j in range(len(sim.arms))}
        props = {sim.arms[j]: float(sim.probs[i, j]) for j in range(len(sim.arms))}
        order = [arm, *(x for x in sim.arms if x != arm)]
        latency = float(data.latency_s[p, a])
        rec = DecisionRecord(
            request_id=f"{data.name}-{seed}-{i:07d}", ts=start_ts + i, policy=policy, policy_version="simulated",
            task_label=str(data.tasks[p]), embedding=encode_embedding(emb[p]), embedder=embedder.name,
            input_tokens_est=int(tokens_in[p]),
            output_tokens_est=int(out_est[a]), eligible=order, scores=dict(props), propensities=props,
            est_cost_usd=est_cost, chosen_arm=arm, served_arm=arm,
            attempts=[{"arm": arm, "status": "ok", "latency_s": latency, "error_kind": None}],
            input_tokens=int(tokens_in[p]), output_tokens=int(data.output_tokens[p, a]),
            cost_usd=float(data.cost_usd[p, a]), latency_s=latency, weights=dict(wdict),
        )
        if rng.random() < feedback_rate:
            rec.quality, rec.quality_source, rec.feedback_ts = float(data.quality[p, a]), "dataset", rec.ts
        store.append(rec)
        if on_progress is not None and (i + 1) % 1000 == 0:
            on_progress(i + 1, len(sim.actions))
    store.flush(None)
    return sim
