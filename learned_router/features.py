"""Request features for routing: token estimates, the prompt embedding and task probabilities.

The embedder sees ``ChatRequest.prompt_text()`` (every message, joined). With MiniLM's ``head_tail``
long-prompt handling, a long conversation is read as its beginning (system prompt, first turn) and its end
(the latest turn), which is what decides the task.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from learned_router.strategies.base import Features
from learned_router.types import ChatRequest

if TYPE_CHECKING:
    from learned_router.classifier import TaskClassifier
    from learned_router.config import RouterConfig
    from learned_router.protocols import Embedder

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "FeatureExtractor", "build_feature_extractor"]

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat format adds per message (role markers and separators), as OpenAI documents (3-4)."""


class FeatureExtractor:
    """Turns a :class:`ChatRequest` into :class:`Features`.

    Args:
        embedder: any :class:`~learned_router.protocols.Embedder`; None gives no embedding.
        classifier: a fitted :class:`~learned_router.classifier.TaskClassifier`; needs an embedder.
        chars_per_token: characters per token for the input estimate (4 for English with BPE tokenizers).
        default_output_tokens: the expected answer length when nothing better is known.
        output_tokens_by_task: optional expected answer length per task; the estimate is then the
            probability-weighted mean over the task distribution (tasks missing from the mapping count
            as ``default_output_tokens``).

    Errors from the embedder or the classifier propagate unchanged: the caller decides on a fallback.
    """

    def __init__(self, embedder: Embedder | None = None, classifier: TaskClassifier | None = None,
                 chars_per_token: float = 4.0, default_output_tokens: int = 256,
                 output_tokens_by_task: Mapping[str, int] | None = None) -> None:
        if chars_per_token <= 0:
            raise ValueError(f"chars_per_token must be positive, got {chars_per_token}")
        if default_output_tokens <= 0:
            raise ValueError(f"default_output_tokens must be positive, got {default_output_tokens}")
        if classifier is not None and embedder is None:
            raise ValueError("a task classifier needs an embedder")
        self.embedder = embedder
        self.classifier = classifier
        self.chars_per_token = chars_per_token
        self.default_output_tokens = default_output_tokens
        self.output_tokens_by_task = dict(output_tokens_by_task or {})

    def input_tokens(self, req: ChatRequest) -> int:
        """Estimated prompt tokens: characters / ``chars_per_token`` plus a per-message overhead."""
        return max(1, math.ceil(len(req.prompt_text()) / self.chars_per_token)
                   + MESSAGE_OVERHEAD_TOKENS * len(req.messages))

    def output_tokens(self, req: ChatRequest, task_probs: Mapping[str, float]) -> int:
        """Expected answer tokens, capped by the request's ``max_tokens``."""
        expected = float(self.default_output_tokens)
        if self.output_tokens_by_task and task_probs:
            expected = sum(p * self.output_tokens_by_task.get(t, self.default_output_tokens)
                           for t, p in task_probs.items())
        est = max(1, round(expected))
        return min(est, req.max_tokens) if req.max_tokens else est

    def extract(self, req: ChatRequest) -> Features:
        """Features of one request (see :meth:`extract_many`); the per-request routing path."""
        if self.embedder is None:
            return self.extract_many([req])[0]
        text = req.prompt_text()
        one = getattr(self.embedder, "embed_one", None)  # optional in the Embedder protocol
        embedding = np.asarray(one(text) if one is not None else self.embedder.embed([text])[0], dtype=np.float32)
        if req.task_hint:
            task_probs: dict[str, float] = {req.task_hint: 1.0}
        elif self.classifier is not None:
            task_probs = self.classifier.predict_dict(embedding)
        else:
            task_probs = {}
        return Features(input_tokens=self.input_tokens(req), output_tokens_est=self.output_tokens(req, task_probs),
                        embedding=embedding, task_probs=task_probs, embedder=self.embedder.name)

    def extract_many(self, reqs: Sequence[ChatRequest]) -> list[Features]:
        """Features of many requests, embedding and classifying them in one batch.

        ``task_probs`` is one-hot on ``task_hint`` when the request has one, else the classifier's
        probabilities, else empty. ``embedding`` is a float32 (dim,) vector, or None without an embedder.
        """
        reqs = list(reqs)
        embeddings: np.ndarray[Any, Any] | None = None
        if self.embedder is not None and reqs:
            embeddings = np.asarray(self.embedder.embed([r.prompt_text() for r in reqs]), dtype=np.float32)
        probs: list[dict[str, float]] = [{} for _ in reqs]
        if self.classifier is not None and embeddings is not None:
            need = [i for i, r in enumerate(reqs) if not r.task_hint]
            if need:
                for i, row in zip(need, self.classifier.predict_dicts(embeddings[need]), strict=True):
                    probs[i] = row
        out: list[Features] = []
        for i, req in enumerate(reqs):
            task_probs = {req.task_hint: 1.0} if req.task_hint else probs[i]
            out.append(Features(
                input_tokens=self.input_tokens(req),
                output_tokens_est=self.output_tokens(req, task_probs),
                embedding=None if embeddings is None else embeddings[i],
                task_probs=task_probs, embedder=None if embeddings is None else self.embedder.name,
            ))
        return out


def _shipped_classifier_dirs() -> tuple[Path, ...]:
    """The classifiers shipped in ``models/``: one for MiniLM, one for the static engine."""
    models = Path(__file__).resolve().parent.parent / "models"
    return models / "task_classifier", models / "static_minilm" / "task_classifier"


def build_feature_extractor(cfg: RouterConfig, *, embedder: Embedder | None = None,
                            classifier_dir: str | Path | None = None) -> FeatureExtractor:
    """Wire a FeatureExtractor from the config (reads the classifier manifest; loads no weights).

    The classifier comes from ``classifier_dir``, else ``<routing.model_path>/task_classifier``, else the
    shipped one that matches the embedder (``models/task_classifier`` for MiniLM,
    ``models/static_minilm/task_classifier`` for the static engine). An explicitly placed classifier that
    was trained on another embedder is a :class:`~learned_router.errors.ConfigError`; with no matching
    shipped classifier (e.g. the ``hashing`` embedder) there is none.

    Raises:
        ConfigError: the configured classifier is unreadable or does not match the embedder.
    """
    from learned_router.classifier import TaskClassifier
    from learned_router.embedders import make_embedder

    if embedder is None:
        kind = cfg.embedder.kind
        kwargs: dict[str, Any] = {"cache_size": cfg.embedder.cache_size}
        if kind == "hashing":
            kwargs["dim"] = cfg.embedder.dim
        embedder = make_embedder(kind, **kwargs)
    explicit: Path | None = Path(classifier_dir) if classifier_dir is not None else None
    if explicit is None and cfg.routing.model_path is not None:
        candidate = Path(cfg.routing.model_path) / "task_classifier"
        explicit = candidate if candidate.is_dir() else None
    classifier: TaskClassifier | None = None
    if explicit is not None:
        classifier = TaskClassifier.load(explicit)
        classifier.check_embedder(embedder)
    else:
        for folder in _shipped_classifier_dirs():
            if (folder / "manifest.json").is_file():
                shipped = TaskClassifier.load(folder)
                emb = shipped.manifest_.get("embedder", {})
                if (emb.get("name"), emb.get("dim")) == (embedder.name, embedder.dim):
                    classifier = shipped
                    break
        if classifier is None:
            log.info("no shipped task classifier matches %s embeddings; task probabilities stay empty",
                     embedder.name)
    return FeatureExtractor(embedder, classifier)
