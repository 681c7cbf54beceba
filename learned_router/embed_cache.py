"""The batch-and-cache base of every embedder: an LRU of vectors by prompt hash, shared by the engines.

A subclass implements ``_compute(texts)``; :class:`CachedEmbedder` serves repeated texts and texts seen
before from a thread-safe LRU keyed by sha256 of the text, and computes the rest in one batch.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["CacheInfo", "CachedEmbedder", "normalise"]


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


def normalise(mat: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """Row-wise L2 normalisation; all-zero rows stay zero."""
    out = np.asarray(mat, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


class CachedEmbedder(ABC):
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
