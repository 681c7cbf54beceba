"""Loading a routing benchmark dataset and caching its prompt embeddings.

A dataset folder holds ``prompts.parquet`` (``prompt_id``, ``prompt``, ``split``, optionally ``task``),
``outcomes.parquet`` (one row per prompt and model: ``quality``, ``cost_usd``, ``output_tokens``,
``latency_s``), ``models.json`` (prices and a latency profile per model) and ``meta.json``.
The outcome matrix is dense, so every router can be replayed on every prompt.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from learned_router.errors import RouterError
from learned_router.protocols import Embedder
from learned_router.types import ChatRequest

__all__ = ["NO_TASK", "BenchDataset", "cached_embeddings", "load_dataset", "quality_range"]

logger = logging.getLogger(__name__)

NO_TASK = "unknown"
"""The task of a prompt whose dataset gives none (no ``task`` column, or an empty cell)."""

_PROMPT_COLUMNS = ("prompt_id", "prompt", "split")  # ``task`` is optional; no test prompt's task is read
_OUTCOME_COLUMNS = ("prompt_id", "model", "quality", "cost_usd", "output_tokens", "latency_s")
_MODEL_KEYS = ("price_in_per_mtok", "price_out_per_mtok", "ttft_s", "output_tokens_per_s")


@dataclass(frozen=True)
class BenchDataset:
    """A dense (prompt × model) outcome matrix with its prompts and model catalogue.

    Arrays of shape (n,) are per prompt, (n, k) per prompt and model, (k,) per model; models are in
    ``models.json`` order.
    """

    name: str
    prompt_ids: NDArray[np.str_]
    prompts: list[str]
    tasks: NDArray[np.str_]
    is_train: NDArray[np.bool_]
    models: tuple[str, ...]
    quality: NDArray[np.float64]
    cost_usd: NDArray[np.float64]
    output_tokens: NDArray[np.float64]
    latency_s: NDArray[np.float64]
    price_in_per_mtok: NDArray[np.float64]
    price_out_per_mtok: NDArray[np.float64]
    ttft_s: NDArray[np.float64]
    output_tokens_per_s: NDArray[np.float64]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def input_tokens(self) -> NDArray[np.float64]:
        """Estimated input tokens per prompt (characters / ``chars_per_token`` from meta.json, default 4)."""
        cpt = float(self.meta.get("chars_per_token", 4.0))
        return np.array([max(1.0, len(p) / cpt) for p in self.prompts])

    def take(self, rows: NDArray[np.int64], models: NDArray[np.int64] | None = None) -> BenchDataset:
        """The dataset restricted to ``rows`` (prompt indices) and, when given, ``models`` (model indices)."""
        cols = np.arange(self.n_models) if models is None else np.asarray(models)
        per_model = ("price_in_per_mtok", "price_out_per_mtok", "ttft_s", "output_tokens_per_s")
        cells = ("quality", "cost_usd", "output_tokens", "latency_s")
        return replace(self, prompt_ids=self.prompt_ids[rows], prompts=[self.prompts[i] for i in rows],
                       tasks=self.tasks[rows], is_train=self.is_train[rows],
                       models=tuple(self.models[j] for j in cols),
                       **{c: getattr(self, c)[rows][:, cols] for c in cells},
                       **{m: getattr(self, m)[cols] for m in per_model})

    def key(self) -> str:
        """A hash of the prompt ids in order: the key of the embedding cache."""
        h = hashlib.sha256("\n".join(self.prompt_ids.tolist()).encode()).hexdigest()
        return h[:16]


def quality_range(quality: NDArray[np.float64]) -> tuple[float, float]:
    """The quality scale the sweep and the online prior are set on, as (low end, span): the format's [0, 1]
    for data inside it (benchmarked as it always was), else the train outcomes' own range. A 1-10 scale then
    gives (1, 9), and every router decides as on the same data mapped to [0, 1] (the fits are
    affine-equivariant and the trade-off weights scale with the span)."""
    if quality.size == 0:
        return 0.0, 1.0
    low, high = float(quality.min()), float(quality.max())
    if low >= -1e-9 and high <= 1 + 1e-9:
        return 0.0, 1.0
    return low, max(high - low, 1e-12)


def _prompt_text(raw: str) -> str:
    """The text the router reads for a dataset prompt. A chat-style prompt stored as JSON (a list of
    ``{"role", "content"}`` messages, or ``{"messages": [...]}``) reads as the router reads that request in
    production (``ChatRequest.prompt_text``: every message's text, joined), not as JSON syntax; any other
    string is the prompt itself."""
    head = raw.lstrip()[:1]
    if head not in ("[", "{"):
        return raw
    try:
        parsed = json.loads(raw)
        request = ChatRequest.coerce(parsed if isinstance(parsed, dict) else {"messages": parsed})
    except (ValueError, TypeError, RouterError):  # not a chat request in JSON: the string is the prompt
        return raw
    return request.prompt_text()


def _tidy(prompts: Any, outcomes: Any, root: Path) -> tuple[Any, Any]:
    """The prompts and outcomes a benchmark reads (pandas frames, prompt ids as strings, split names
    lower-cased): prompts of a split other than train and test (a validation split) are left out, a repeated
    prompt id keeps its first row, and repeated (prompt, model) outcomes are averaged, each with a warning."""
    prompts = prompts.assign(prompt_id=prompts["prompt_id"].astype(str),
                             split=prompts["split"].astype(str).str.strip().str.lower())
    outcomes = outcomes.assign(prompt_id=outcomes["prompt_id"].astype(str))
    other = ~prompts["split"].isin(("train", "test"))
    if other.any():  # neither trained on nor scored
        logger.warning("%s: ignoring %d prompts whose split is not train or test: %s", root, int(other.sum()),
                       prompts.loc[other, "split"].value_counts().to_dict())
        prompts = prompts.loc[~other]
        outcomes = outcomes[outcomes["prompt_id"].isin(set(prompts["prompt_id"]))]
    dup = prompts["prompt_id"].duplicated()
    if dup.any():
        logger.warning("%s: %d repeated prompt ids (e.g. %s): the first row of each is used", root,
                       int(dup.sum()), prompts.loc[dup, "prompt_id"].iloc[0])
        prompts = prompts.loc[~dup]
    repeated = outcomes.duplicated(["prompt_id", "model"])
    if repeated.any():
        logger.warning("%s: %d repeated (prompt, model) outcomes: their mean is used", root,
                       int(repeated.sum()))
        outcomes = outcomes.groupby(["prompt_id", "model"], as_index=False, sort=False)[
            list(_OUTCOME_COLUMNS[2:])].mean()
    return prompts.reset_index(drop=True), outcomes


def load_dataset(dataset_dir: str | Path) -> BenchDataset:
    """Read a dataset folder. Raises ValueError when a file is missing or the matrix is not dense."""
    import pandas as pd

    root = Path(dataset_dir)
    for name in ("prompts.parquet", "outcomes.parquet", "models.json"):
        if not (root / name).is_file():
            raise ValueError(f"{root} is not a routing dataset: {name} is missing")
    prompts = pd.read_parquet(root / "prompts.parquet")
    outcomes = pd.read_parquet(root / "outcomes.parquet")
    missing = [c for c in _PROMPT_COLUMNS if c not in prompts.columns]
    missing += [c for c in _OUTCOME_COLUMNS if c not in outcomes.columns]
    if missing:
        raise ValueError(f"{root}: missing columns {missing}")
    catalogue = json.loads((root / "models.json").read_text())
    meta = json.loads((root / "meta.json").read_text()) if (root / "meta.json").is_file() else {}
    models = tuple(catalogue)
    unknown = set(outcomes["model"].unique()) - set(models)
    if unknown:
        raise ValueError(f"{root}: outcomes name models missing from models.json: {sorted(unknown)[:5]}")

    prompts, outcomes = _tidy(prompts, outcomes, root)
    ids = prompts["prompt_id"].to_numpy()
    row = {pid: i for i, pid in enumerate(ids)}
    col = {m: j for j, m in enumerate(models)}
    n, k = len(ids), len(models)
    r = outcomes["prompt_id"].map(row)
    if r.isna().any():
        raise ValueError(f"{root}: outcomes reference prompt ids missing from prompts.parquet")
    ri = r.to_numpy(dtype=np.int64)
    ci = outcomes["model"].map(col).to_numpy(dtype=np.int64)
    seen = np.zeros((n, k), dtype=bool)
    seen[ri, ci] = True
    if not seen.all():
        raise ValueError(f"{root}: the outcome matrix is not dense ({int((~seen).sum())} cells missing)")

    def matrix(column: str) -> NDArray[np.float64]:
        values = outcomes[column].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{root}: outcomes column {column!r} has {int((~np.isfinite(values)).sum())} "
                             "missing or non-finite values")
        out = np.zeros((n, k))
        out[ri, ci] = values
        return out

    quality = matrix("quality")
    if quality_range(quality) != (0.0, 1.0):
        logger.warning("%s: quality ranges from %g to %g, outside the format's [0, 1]; the benchmark runs on "
                       "the data's own scale (the sweep of trade-off settings and the online router's prior "
                       "are scaled to it), but its figures are not comparable with [0, 1] datasets",
                       root, quality.min(), quality.max())

    def per_model(key: str) -> NDArray[np.float64]:
        return np.array([float(catalogue[m].get(key, 0.0)) for m in models])

    return BenchDataset(
        name=str(meta.get("name") or root.name),
        prompt_ids=ids,
        prompts=[_prompt_text(p) for p in prompts["prompt"].fillna("").astype(str)],  # missing: empty
        tasks=(prompts["task"].fillna(NO_TASK).astype(str).to_numpy() if "task" in prompts.columns
               else np.full(len(ids), NO_TASK)),
        is_train=(prompts["split"] == "train").to_numpy(),
        models=models,
        quality=quality,
        cost_usd=matrix("cost_usd"),
        output_tokens=matrix("output_tokens"),
        latency_s=matrix("latency_s"),
        price_in_per_mtok=per_model("price_in_per_mtok"),
        price_out_per_mtok=per_model("price_out_per_mtok"),
        ttft_s=per_model("ttft_s"),
        output_tokens_per_s=np.maximum(per_model("output_tokens_per_s"), 1e-9),
        meta=meta,
    )


def cached_embeddings(
    data: BenchDataset,
    embedder: Embedder,
    cache_dir: str | Path | None,
    *,
    batch_size: int = 256,
    on_batch: Callable[[int, int], None] | None = None,
) -> NDArray[np.float32]:
    """Embeddings of every prompt of ``data`` (shape (n, embedder.dim)), cached on disk.

    The cache is ``<cache_dir>/<dataset>-<embedder name>.npy`` with a sidecar ``.json`` holding the hash of
    the prompt ids; a cache whose key or shape does not match is recomputed. ``on_batch(done, total)``
    reports progress.
    """
    path = json_path = None
    if cache_dir is not None:
        base = Path(cache_dir) / f"{data.name}-{embedder.name}"
        path, json_path = base.with_suffix(".npy"), base.with_suffix(".json")
        if path.is_file() and json_path.is_file():
            try:
                info = json.loads(json_path.read_text())
                emb = np.load(path)
                if info.get("key") == data.key() and emb.shape == (len(data.prompts), embedder.dim):
                    return emb.astype(np.float32, copy=False)
            except (OSError, ValueError) as exc:
                logger.warning("ignoring a broken embedding cache %s: %s", path, exc)
    total = len(data.prompts)
    parts = []
    for start in range(0, total, batch_size):
        parts.append(np.asarray(embedder.embed(data.prompts[start:start + batch_size]), dtype=np.float32))
        if on_batch is not None:
            on_batch(min(start + batch_size, total), total)
    emb = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)
    if path is not None and json_path is not None:
        try:  # the cache only saves time: a folder we cannot write to must not fail the benchmark
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, emb)
            json_path.write_text(json.dumps({"key": data.key(), "n": total, "dim": int(embedder.dim),
                                             "embedder": embedder.name}))
        except OSError as exc:
            logger.warning("embeddings not cached in %s: %s", path.parent, exc)
    return emb
