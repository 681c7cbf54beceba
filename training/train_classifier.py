"""Train the task classifier on labelled prompts and write ``models/task_classifier/``.

Usage::

    python training/train_classifier.py [--labels ../shared/data/task_labels/task_labels.parquet]
                                        [--out models/task_classifier] [--embedder minilm] [--seed 0]
    # the static engine: distil its table, then train its own classifier
    python training/train_classifier.py --embedder static --distill-static \\
                                        --out models/static_minilm/task_classifier --C 32

Label mapping. The source labels (``task_type`` in ``task_labels.parquet``) are mapped onto the router's
taxonomy (:data:`learned_router.classifier.TASK_TAXONOMY`) by :data:`TASK_MAP`:

* ``qa`` (MMLU-Pro, ARC-Challenge, RouterArena knowledge questions) and dolly ``open_qa`` (factual questions
  answerable from world knowledge) → ``knowledge_qa``.
* dolly ``closed_qa`` (a question to answer *from a supplied passage*) → ``information_extraction``: both
  carry the reference text in the prompt and ask to pull an answer out of it; their prompts are not
  separable by content, and they route alike.
* dolly ``general_qa`` → ``chat``. The data has no conversational class; ``general_qa`` holds open-ended
  advice and opinion questions ("What is your thought on children having smart phones?", "how do i heal my
  mind"), the everyday assistant conversation that a chat model serves. It is topped up with the small
  hand-written seed file ``data/task_seed.jsonl`` (greetings, small talk; see ``data/README.md``).
* ``translation`` has only 31 single-template prompts in the data; the seed file adds 20 differently phrased
  ones so that the class is not just one template.
* every other type keeps its name (code, math, reasoning, summarization, information_extraction,
  creative_writing, classification, brainstorming).

Large (source, task_type) groups are subsampled to ``max_per_group`` prompts so that no benchmark dominates
and embedding stays quick; the held-out split is stratified by label.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from learned_router.classifier import TaskClassifier
from learned_router.protocols import Embedder

__all__ = ["TASK_MAP", "distill_static", "embed_texts", "fit_from_arrays", "load_task_labels", "train_task_classifier"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LABELS = ROOT.parent / "shared" / "data" / "task_labels" / "task_labels.parquet"
DEFAULT_SEED = ROOT / "data" / "task_seed.jsonl"
DEFAULT_OUT = ROOT / "models" / "task_classifier"

TASK_MAP: dict[str, str] = {
    "code": "code",
    "math": "math",
    "reasoning": "reasoning",
    "qa": "knowledge_qa",
    "open_qa": "knowledge_qa",
    "closed_qa": "information_extraction",
    "general_qa": "chat",
    "information_extraction": "information_extraction",
    "summarization": "summarization",
    "creative_writing": "creative_writing",
    "classification": "classification",
    "brainstorming": "brainstorming",
    "translation": "translation",
    "chat": "chat",
}


def file_sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def load_task_labels(labels_path: str | Path, *, seed_path: str | Path | None = DEFAULT_SEED,
                     max_per_group: int | None = 400, seed: int = 0) -> Any:
    """Read the labelled prompts (plus the seed file), map labels onto the taxonomy, subsample.

    Returns:
        A pandas DataFrame with columns ``prompt``, ``label``, ``source``, ``task_type``.

    Raises:
        ValueError: a ``task_type`` has no mapping in :data:`TASK_MAP`.
    """
    import pandas as pd

    df = pd.read_parquet(labels_path, columns=["source", "task_type", "prompt"])
    if seed_path is not None and Path(seed_path).is_file():
        seed_df = pd.read_json(seed_path, lines=True)
        seed_df["source"] = "seed"
        df = pd.concat([df, seed_df[["source", "task_type", "prompt"]]], ignore_index=True)
    unknown = sorted(set(df["task_type"]) - set(TASK_MAP))
    if unknown:
        raise ValueError(f"task types without a mapping: {unknown}")
    df = df[df["prompt"].str.strip().str.len() > 0].drop_duplicates("prompt")
    if max_per_group is not None:
        df = df.sample(frac=1.0, random_state=seed)
        df = df[df.groupby(["source", "task_type"]).cumcount() < max_per_group].sort_index()
    df = df.assign(label=df["task_type"].map(TASK_MAP)).reset_index(drop=True)
    return df[["prompt", "label", "source", "task_type"]]


def embed_texts(embedder: Embedder, texts: Sequence[str], *, cache_dir: str | Path | None = None,
                batch_size: int = 64) -> NDArray[np.float32]:
    """Embed ``texts`` in batches; with ``cache_dir``, reuse a ``.npy`` keyed by embedder and texts."""
    key = hashlib.sha256()
    key.update(f"{embedder.name}|{getattr(embedder, 'long_strategy', '')}|{embedder.dim}".encode())
    for t in texts:
        key.update(hashlib.sha256(t.encode()).digest())
    cache = Path(cache_dir) / f"embed-{key.hexdigest()[:20]}.npy" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        arr = np.load(cache)
        if arr.shape == (len(texts), embedder.dim):
            return arr.astype(np.float32)
    parts = [np.asarray(embedder.embed(list(texts[i:i + batch_size])), dtype=np.float32)
             for i in range(0, len(texts), batch_size)]
    arr = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, arr)
    return arr


def fit_from_arrays(embeddings: NDArray[Any], labels: Sequence[str], *, embedder_name: str, C: float = 4.0,
                    seed: int = 0, data_sha256: str = "") -> TaskClassifier:
    """Fit a classifier from embeddings and task labels, e.g. rows of the decision log.

    Args:
        embeddings: (n, d) array (float16 log embeddings are accepted and widened).
        labels: n task labels (any strings; rows with empty labels must be removed by the caller).
        embedder_name: recorded in the manifest; must be the embedder that produced ``embeddings``.

    Raises:
        ValueError: fewer than two distinct labels, or shapes disagree.
    """
    X = np.asarray(embeddings, dtype=np.float32)
    return TaskClassifier(C=C, seed=seed).fit(X, list(labels), embedder_name=embedder_name,
                                              data_sha256=data_sha256)


def train_task_classifier(labels_path: str | Path, out_dir: str | Path | None, *, embedder: Embedder,
                          seed: int = 0, test_size: float = 0.2, max_per_group: int | None = 400,
                          seed_path: str | Path | None = DEFAULT_SEED, C: float = 4.0,
                          cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Train on the labelled prompts, report on a stratified held-out split, save the artifact.

    The saved classifier is the one fitted on the training split, so ``report.json`` describes exactly
    the shipped model.

    Returns:
        The held-out report (see :meth:`TaskClassifier.report`) plus ``ece_uncalibrated``, the label
        mapping and the data sizes. With ``out_dir``, also writes ``classifier.joblib``,
        ``manifest.json`` and ``report.json`` there.
    """
    from sklearn.model_selection import train_test_split

    df = load_task_labels(labels_path, seed_path=seed_path, max_per_group=max_per_group, seed=seed)
    X = embed_texts(embedder, df["prompt"].tolist(), cache_dir=cache_dir)
    y = df["label"].to_numpy()
    idx_train, idx_test = train_test_split(np.arange(len(df)), test_size=test_size, stratify=y,
                                           random_state=seed)
    sha = file_sha256(Path(labels_path), *([Path(seed_path)] if seed_path else []))
    clf = TaskClassifier(C=C, seed=seed).fit(X[idx_train], y[idx_train], embedder_name=embedder.name,
                                             data_sha256=sha)
    report = clf.report(X[idx_test], y[idx_test])
    raw = TaskClassifier(C=C, seed=seed, calibrate=False).fit(X[idx_train], y[idx_train])
    report["ece_uncalibrated"] = raw.report(X[idx_test], y[idx_test])["ece"]
    report["temperature"] = clf.temperature_
    report["n_train"] = len(idx_train)
    report["label_map"] = TASK_MAP
    report["embedder"] = {"name": embedder.name, "dim": embedder.dim,
                          "long_strategy": getattr(embedder, "long_strategy", None)}
    report["data_sha256"] = sha
    if out_dir is not None:
        out = clf.save(out_dir)
        (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def format_report(report: dict[str, Any]) -> str:
    """The per-class table as text."""
    lines = [f"{'class':<24}{'precision':>10}{'recall':>10}{'f1':>8}{'support':>9}"]
    for label, m in report["per_class"].items():
        lines.append(f"{label:<24}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>8.3f}{m['support']:>9d}")
    lines.append(f"accuracy {report['accuracy']:.3f}   macro-F1 {report['macro_f1']:.3f}   "
                 f"ECE {report['ece']:.3f} (uncalibrated {report['ece_uncalibrated']:.3f})   "
                 f"log-loss {report['log_loss']:.3f}   n_test {report['n']}   n_train {report['n_train']}")
    return "\n".join(lines)


def distill_static(labels_path: str | Path, out_path: str | Path, *, seed: int = 0,
                   max_per_group: int | None = 400, cache_dir: str | Path | None = None) -> Path:
    """Distil the static MiniLM table (see :class:`~learned_router.embedders.StaticEmbedder`), aligning it
    on the same prompts the classifier trains on."""
    from learned_router.embedders import MiniLMEmbedder, StaticEmbedder

    minilm = MiniLMEmbedder()
    prompts = load_task_labels(labels_path, max_per_group=max_per_group, seed=seed)["prompt"].tolist()
    targets = embed_texts(minilm, prompts, cache_dir=cache_dir)
    return StaticEmbedder.distill(minilm, out_path, prompts, targets=targets)


def main(argv: Sequence[str] | None = None) -> int:
    from learned_router.embedders import default_static_table, make_embedder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--embedder", default="minilm", help="minilm, static or hashing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-size", type=float, default=0.2)
    ap.add_argument("--max-per-group", type=int, default=400)
    ap.add_argument("--C", type=float, default=4.0)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "out" / "cache")
    ap.add_argument("--distill-static", action="store_true",
                    help="first (re)make the static embedder's table from MiniLM")
    args = ap.parse_args(argv)
    if args.distill_static:
        path = distill_static(args.labels, default_static_table(), seed=args.seed,
                              max_per_group=args.max_per_group, cache_dir=args.cache_dir)
        print(f"wrote {path}")
    report = train_task_classifier(args.labels, args.out, embedder=make_embedder(args.embedder), seed=args.seed,
                                   test_size=args.test_size, max_per_group=args.max_per_group, C=args.C,
                                   cache_dir=args.cache_dir)
    print(format_report(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
