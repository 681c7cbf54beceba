"""The context transform: request features → the context vector read by :class:`LinearTS`.

``x = [1, PCA(embedding), soft cluster memberships, task probabilities, log(1 + input tokens)]``

* the bias comes first (index 0); every other feature is centred on the training data, so the bias
  coefficient carries an arm's average quality and the arm's quality prior sits on it;
* PCA keeps ``n_components`` directions of the L2-normalised embedding (optionally whitened);
* ``n_clusters`` centroids from spherical k-means give soft memberships ``softmax(cos(e, c_j) / temperature)``,
  a non-linear feature that lets a linear model follow topic-level differences between models;
* task probabilities come from the task classifier (columns in ``task_labels`` order);
* the log prompt length is standardised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from learned_router.errors import NotFittedError, PolicyStateError

__all__ = ["ContextTransform", "spherical_kmeans"]

_VERSION = 1
Array = NDArray[np.float64]


def spherical_kmeans(X: Array, k: int, *, n_iter: int = 10, seed: int = 0) -> Array:
    """``k`` unit-norm centroids of the unit-norm rows of ``X`` (cosine k-means, seeded initialisation)."""
    rng = np.random.default_rng(seed)
    k = min(k, len(X))
    C = X[rng.choice(len(X), k, replace=False)].astype(np.float64)
    for _ in range(n_iter):
        assign = np.argmax(X @ C.T, axis=1)
        sums = np.zeros_like(C)
        np.add.at(sums, assign, X)
        empty = np.bincount(assign, minlength=k) == 0
        sums[empty] = C[empty]
        C = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return C


_LEN_CLIP = 4.0  # standardised log prompt length is clipped to [-4, 4]

class ContextTransform:
    """Fitted map from (embedding, input tokens, task probabilities) to a context vector.

    Args:
        n_components: PCA dimensions kept from the embedding (0 drops them).
        whiten: scale each component to unit variance on the training data.
        task_labels: the task classes, in the order of the task-probability columns (empty: no task feature).
        n_clusters: soft cluster-membership features (0: none).
        temperature: softmax temperature of the cluster memberships (cosine units).
        seed: seed of the k-means initialisation.
    """

    def __init__(self, n_components: int = 48, *, whiten: bool = False, task_labels: Sequence[str] = (),
                 n_clusters: int = 0, temperature: float = 0.05, seed: int = 0) -> None:
        self.n_components = int(n_components)
        self.whiten = bool(whiten)
        self.task_labels = tuple(str(t) for t in task_labels)
        self.n_clusters = int(n_clusters)
        self.temperature = float(temperature)
        self.seed = int(seed)

    @property
    def dim(self) -> int:
        return 1 + self.components_.shape[0] + self.centroids_.shape[0] + len(self.task_labels) + 1

    def fit(self, embeddings: ArrayLike, input_tokens: ArrayLike, task_probs: ArrayLike | None = None
            ) -> ContextTransform:
        """Fit PCA, clusters and centring on training rows: embeddings (n, D), input tokens (n,), task
        probabilities (n, T) in ``task_labels`` order."""
        E = np.asarray(embeddings, dtype=np.float64)
        self.embed_dim_ = E.shape[1]
        self.mean_ = E.mean(axis=0)
        p = min(self.n_components, E.shape[1], max(len(E) - 1, 0))
        if p > 0:
            centred = E - self.mean_
            evals, evecs = np.linalg.eigh(centred.T @ centred / max(len(E) - 1, 1))
            top = np.argsort(evals)[::-1][:p]
            comps = evecs[:, top].T
            comps *= np.where(comps[np.arange(p), np.abs(comps).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
            self.components_ = comps
            sd = np.sqrt(np.maximum(evals[top], 0.0))
            self.scales_ = 1.0 / np.maximum(sd, 1e-8) if self.whiten else np.ones(p)
        else:
            self.components_ = np.zeros((0, E.shape[1]))
            self.scales_ = np.zeros(0)
        if self.n_clusters > 0 and len(E) > self.n_clusters:
            self.centroids_ = spherical_kmeans(E, self.n_clusters, seed=self.seed)
            self.cluster_mean_ = np.zeros(self.centroids_.shape[0])
            self.cluster_mean_ = self._memberships(E).mean(axis=0)
        else:
            self.centroids_ = np.zeros((0, E.shape[1]))
            self.cluster_mean_ = np.zeros(0)
        lt = np.log1p(np.asarray(input_tokens, dtype=np.float64).reshape(-1))
        # A floor on the spread: traffic of near-constant length must not turn an unusual prompt length
        # into a huge feature value (and an unbounded posterior variance) at serving time.
        self.len_mean_, self.len_sd_ = float(lt.mean()), float(max(lt.std(), 0.5))
        T = self._task_matrix(task_probs, len(E))
        self.task_mean_ = T.mean(axis=0) if len(T) else np.zeros(len(self.task_labels))
        self._prepare_serving()
        return self

    def _memberships(self, E: Array) -> Array:
        if self.centroids_.shape[0] == 0:
            return np.zeros((len(E), 0))
        S = (E @ self.centroids_.T) / self.temperature
        S = np.exp(S - S.max(axis=1, keepdims=True))
        return S / S.sum(axis=1, keepdims=True) - self.cluster_mean_

    def _task_matrix(self, task_probs: ArrayLike | None, n: int) -> Array:
        if not self.task_labels:
            return np.zeros((n, 0))
        if task_probs is None:
            return np.full((n, len(self.task_labels)), 1.0 / len(self.task_labels))
        T = np.asarray(task_probs, dtype=np.float64).reshape(n, -1)
        if T.shape[1] != len(self.task_labels):
            raise ValueError(f"task_probs must have {len(self.task_labels)} columns, got {T.shape[1]}")
        return T

    def transform(self, embeddings: ArrayLike, input_tokens: ArrayLike, task_probs: ArrayLike | None = None
                  ) -> Array:
        """Context vectors, shape (n, dim). Raises NotFittedError before fit/from_state."""
        if not hasattr(self, "components_"):
            raise NotFittedError("ContextTransform.fit or from_state first")
        E = np.asarray(embeddings, dtype=np.float64)
        n = len(E)
        Z = (E - self.mean_) @ self.components_.T * self.scales_
        T = self._task_matrix(task_probs, n) - self.task_mean_
        lt = (np.log1p(np.asarray(input_tokens, dtype=np.float64).reshape(-1)) - self.len_mean_) / self.len_sd_
        return np.hstack([np.ones((n, 1)), Z, self._memberships(E), T, np.clip(lt, -_LEN_CLIP, _LEN_CLIP)[:, None]])

    def _prepare_serving(self) -> None:
        """Build the fused serving projection when the fitted state is set (``fit``, ``from_state``): the
        whitened PCA rows and the centroid rows (divided by the temperature) stacked into one float32 matrix,
        so one matrix-vector product gives both feature blocks of a request as ``proj_ @ e - offset_`` (the
        offset centres the PCA block; the cluster block is centred after its softmax)."""
        p = self.components_.shape[0]
        proj = np.vstack([self.components_ * self.scales_[:, None], self.centroids_ / self.temperature])
        self.offset_ = np.concatenate([proj[:p] @ self.mean_, np.zeros(self.centroids_.shape[0])])
        # float32, like the embeddings: half the memory traffic of the product, no upcast per request
        self.proj_ = np.ascontiguousarray(proj, dtype=np.float32)
        self._mean32 = np.ascontiguousarray(self.mean_, dtype=np.float32)
        self.task_mean_ = np.ascontiguousarray(self.task_mean_, dtype=np.float64)
        self.cluster_mean_ = np.ascontiguousarray(self.cluster_mean_, dtype=np.float64)
        self._kernel: Any = None  # compiled on the first transform_one: batch users (training) never need it

    def transform_one(self, embedding: ArrayLike | None, input_tokens: int,
                      task_probs: Mapping[str, float] | None = None) -> Array:
        """One context vector (shape (dim,)) from live features. A missing embedding maps to the training
        mean (no embedding signal); missing task probabilities to the training average.

        The serving path: one compiled kernel (``_kernels.context_vector``) computes the same numbers as
        :meth:`transform` in a couple of µs (``transform`` is the batch path for training)."""
        if not hasattr(self, "components_"):
            raise NotFittedError("ContextTransform.fit or from_state first")
        if embedding is None:
            e = self._mean32
        elif type(embedding) is np.ndarray and embedding.dtype == np.float32 and embedding.ndim == 1:
            e = embedding  # the serving path's embeddings already are float32 vectors
        else:
            e = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if e.shape[0] != self.embed_dim_:
            raise ValueError(f"embedding has {e.shape[0]} dims; the transform was fitted on {self.embed_dim_}")
        tasks = self.task_mean_  # centred to zero: the training average
        if self.task_labels and task_probs:
            tasks = np.array([task_probs.get(k, 0.0) for k in self.task_labels])
        out = np.empty(2 + self.proj_.shape[0] + len(self.task_labels))
        length = min(_LEN_CLIP, max(-_LEN_CLIP, (math.log1p(input_tokens) - self.len_mean_) / self.len_sd_))
        kernel = self._kernel
        if kernel is None:
            from learned_router import _kernels  # numba: imported on first use

            _kernels.warm_up()
            kernel = self._kernel = _kernels.context_vector
        kernel(self.proj_, self.offset_, e, self.components_.shape[0], self.cluster_mean_, tasks, self.task_mean_,
               length, out)
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": "context_transform", "version": _VERSION, "n_components": self.n_components,
            "whiten": self.whiten, "task_labels": list(self.task_labels), "mean": self.mean_.tolist(),
            "components": self.components_.tolist(), "scales": self.scales_.tolist(),
            "len_mean": self.len_mean_, "len_sd": self.len_sd_, "task_mean": self.task_mean_.tolist(),
            "n_clusters": self.n_clusters, "temperature": self.temperature, "seed": self.seed,
            "centroids": self.centroids_.tolist(), "cluster_mean": self.cluster_mean_.tolist(),
        }

    @classmethod
    def from_state(cls, state: Any) -> ContextTransform:
        """Rebuild from :meth:`to_state`; raises PolicyStateError when corrupt."""
        if not isinstance(state, dict) or state.get("kind") != "context_transform" or \
                state.get("version") != _VERSION:
            raise PolicyStateError("not a context transform state of a supported version")
        try:
            t = cls(int(state["n_components"]), whiten=bool(state["whiten"]), task_labels=state["task_labels"],
                    n_clusters=int(state.get("n_clusters", 0)), temperature=float(state.get("temperature", 0.05)),
                    seed=int(state.get("seed", 0)))
            t.mean_ = np.asarray(state["mean"], dtype=np.float64)
            d = len(t.mean_)
            t.components_ = np.asarray(state["components"], dtype=np.float64).reshape(-1, d)
            t.scales_ = np.asarray(state["scales"], dtype=np.float64)
            t.len_mean_, t.len_sd_ = float(state["len_mean"]), float(state["len_sd"])
            t.task_mean_ = np.asarray(state["task_mean"], dtype=np.float64)
            t.centroids_ = np.asarray(state.get("centroids", []), dtype=np.float64).reshape(-1, d)
            t.cluster_mean_ = np.asarray(state.get("cluster_mean", []), dtype=np.float64)
            t.embed_dim_ = d
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyStateError(f"corrupt context transform state: {exc}") from exc
        if (t.scales_.shape != (t.components_.shape[0],) or t.task_mean_.shape != (len(t.task_labels),)
                or t.cluster_mean_.shape != (t.centroids_.shape[0],)):
            raise PolicyStateError("inconsistent context transform shapes")
        arrays = (t.mean_, t.components_, t.scales_, t.task_mean_, t.centroids_, t.cluster_mean_)
        if not all(np.isfinite(a).all() for a in arrays) or not t.len_sd_ > 0 or not t.temperature > 0:
            raise PolicyStateError("the context transform holds invalid numbers")
        t._prepare_serving()
        return t
