"""Task classifier: multinomial logistic regression on prompt embeddings, with temperature calibration.

The fitted model is stored as plain arrays (weights, intercepts, labels, temperature), not as a pickled
scikit-learn object, so an artifact keeps loading across scikit-learn versions and prediction is a single
matrix product (no scikit-learn call on the request path).

Artifact layout (``save(dir)``)::

    dir/classifier.joblib   {"coef": (k, d) float32, "intercept": (k,) float32, "temperature": float}
    dir/manifest.json       labels, embedder name/dim, library versions, data sha256, created time,
                            hyperparameters and the sha256 of classifier.joblib
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from learned_router.errors import ConfigError, NotFittedError

__all__ = ["FORMAT_VERSION", "TASK_TAXONOMY", "TaskClassifier", "expected_calibration_error"]

FORMAT_VERSION = 1

TASK_TAXONOMY: tuple[str, ...] = (
    "brainstorming",
    "chat",
    "classification",
    "code",
    "creative_writing",
    "information_extraction",
    "knowledge_qa",
    "math",
    "reasoning",
    "summarization",
    "translation",
)
"""The task classes the shipped classifier predicts (see ``training/train_classifier.py`` for the mapping)."""


def _softmax(z: NDArray[np.float64]) -> NDArray[np.float64]:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def expected_calibration_error(proba: NDArray[np.floating[Any]], y_idx: NDArray[np.integer[Any]],
                               n_bins: int = 15) -> float:
    """Top-label ECE: the mean |accuracy - confidence| over equal-width confidence bins, weighted by size."""
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_idx
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def _fit_temperature(logits: NDArray[np.float64], y_idx: NDArray[np.intp]) -> float:
    """The temperature in [0.05, 20] that minimises the negative log-likelihood (golden-section on log T)."""
    def nll(log_t: float) -> float:
        p = _softmax(logits / np.exp(log_t))
        return float(-np.log(p[np.arange(len(y_idx)), y_idx] + 1e-12).mean())

    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


class TaskClassifier:
    """Predicts task-class probabilities from L2-normalised prompt embeddings.

    Args:
        C: inverse L2 regularisation strength of the logistic regression.
        max_iter: solver iteration cap.
        calibrate: fit a softmax temperature on a held-out fifth of the training data (then refit the
            regression on all of it) so that the predicted probabilities are calibrated.
        seed: seed of the calibration split.

    After ``fit``/``load``: ``classes_`` (label array, sorted), ``labels_`` (the same as strings),
    ``temperature_``, ``manifest_``.
    """

    def __init__(self, C: float = 4.0, max_iter: int = 3000, calibrate: bool = True, seed: int = 0) -> None:
        self.C = C
        self.max_iter = max_iter
        self.calibrate = calibrate
        self.seed = seed

    # ------------------------------------------------------------------ fitting
    def fit(self, X: ArrayLike, y: Sequence[str] | NDArray[Any], *, embedder_name: str = "",
            data_sha256: str = "") -> TaskClassifier:
        """Fit on embeddings ``X`` of shape (n, d) and string labels ``y`` (at least two classes).

        ``embedder_name`` and ``data_sha256`` are recorded in the manifest.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split

        Xa = np.asarray(X, dtype=np.float32)
        ya = np.asarray([str(v) for v in y])
        if Xa.ndim != 2 or len(Xa) != len(ya):
            raise ValueError(f"X must be (n, d) with n == len(y); got {Xa.shape} and {len(ya)} labels")
        classes, y_idx = np.unique(ya, return_inverse=True)
        if len(classes) < 2:
            raise ValueError("need at least two classes to fit a task classifier")

        def lr(Xf: NDArray[np.float32], yf: NDArray[np.intp]) -> Any:
            return LogisticRegression(C=self.C, max_iter=self.max_iter).fit(Xf, yf)

        temperature = 1.0
        counts = np.bincount(y_idx)
        if self.calibrate and counts.min() >= 2 and len(ya) >= 5 * len(classes):
            X_fit, X_cal, y_fit, y_cal = train_test_split(Xa, y_idx, test_size=0.2, stratify=y_idx,
                                                          random_state=self.seed)
            if len(np.unique(y_fit)) == len(classes):
                logits = lr(X_fit, y_fit).decision_function(X_cal).astype(np.float64)
                if logits.ndim == 1:
                    logits = np.stack([np.zeros_like(logits), logits], axis=1)
                temperature = _fit_temperature(logits, y_cal)
        model = lr(Xa, y_idx)
        self.classes_ = classes
        self.labels_ = [str(c) for c in classes]
        coef = np.asarray(model.coef_, dtype=np.float32)
        intercept = np.asarray(model.intercept_, dtype=np.float32)
        if len(classes) == 2:  # binary LR keeps one row; softmax([0, z]) == sigmoid(z)
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros_like(intercept), intercept])
        self.coef_, self.intercept_ = np.ascontiguousarray(coef), np.ascontiguousarray(intercept)
        self.temperature_ = temperature
        self.manifest_ = self._make_manifest(embedder_name, int(Xa.shape[1]), data_sha256, len(ya), counts)
        return self

    def _make_manifest(self, embedder_name: str, dim: int, data_sha256: str, n: int,
                       counts: NDArray[np.intp]) -> dict[str, Any]:
        import sklearn

        return {
            "format_version": FORMAT_VERSION,
            "kind": "task_classifier",
            "model": "multinomial logistic regression + temperature scaling",
            "labels": [str(c) for c in self.classes_],
            "embedder": {"name": embedder_name, "dim": dim},
            "params": {"C": self.C, "max_iter": self.max_iter, "calibrate": self.calibrate, "seed": self.seed},
            "temperature": self.temperature_,
            "n_train": n,
            "class_counts": {str(c): int(k) for c, k in zip(self.classes_, counts, strict=True)},
            "data_sha256": data_sha256,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": {"python": platform.python_version(), "numpy": np.__version__,
                         "scikit-learn": sklearn.__version__},
        }

    # --------------------------------------------------------------- prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("TaskClassifier is not fitted; call fit() or TaskClassifier.load()")

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Calibrated class probabilities, shape (n, len(classes_)); each row sums to 1.

        Raises:
            NotFittedError: before ``fit``/``load``.
            ValueError: if the embedding width differs from the one fitted on.
        """
        self._check_fitted()
        Xa = np.asarray(X, dtype=np.float32)
        if Xa.ndim == 1:
            Xa = Xa[None, :]
        if Xa.ndim != 2 or Xa.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"expected embeddings of width {self.coef_.shape[1]}, got shape {Xa.shape}")
        logits = (Xa @ self.coef_.T + self.intercept_).astype(np.float64)
        return _softmax(logits / self.temperature_)

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """The most probable label per row."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]  # type: ignore[no-any-return]

    def predict_dict(self, embedding: NDArray[np.floating[Any]]) -> dict[str, float]:
        """``{label: probability}`` for one embedding of shape (dim,): the per-request serving path, the
        same numbers as :meth:`predict_dicts` without the batch checks."""
        self._check_fitted()
        if embedding.shape != (self.coef_.shape[1],):
            raise ValueError(f"expected an embedding of width {self.coef_.shape[1]}, got shape {embedding.shape}")
        kernel = getattr(self, "_softmax", None) or self._load_kernel()
        out = np.empty(len(self.labels_))
        kernel(self.coef_, self.intercept_, 1.0 / float(self.temperature_),
               np.ascontiguousarray(embedding, dtype=np.float32), out)
        return dict(zip(self.labels_, out.tolist(), strict=True))

    def _load_kernel(self) -> Any:
        """The compiled single-row kernel (numba), compiled or loaded from its cache here: by ``load`` for
        a serving router, else on the first single-row call."""
        from learned_router import _kernels

        _kernels.warm_up()
        self._softmax = _kernels.affine_softmax
        return self._softmax

    def predict_dicts(self, X: ArrayLike) -> list[dict[str, float]]:
        """Per row, a ``{label: probability}`` mapping (what ``Features.task_probs`` holds)."""
        proba = self.predict_proba(X)  # checks that the classifier is fitted
        return [dict(zip(self.labels_, row, strict=True)) for row in proba.tolist()]

    def report(self, X: ArrayLike, y: Sequence[str] | NDArray[Any]) -> dict[str, Any]:
        """Held-out metrics: accuracy, macro F1, ECE, log loss, per-class precision/recall/F1/support and
        the confusion matrix (rows: true label, columns: predicted, in ``labels`` order)."""
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        proba = self.predict_proba(X)
        ya = np.asarray([str(v) for v in y])
        labels = [str(c) for c in self.classes_]
        index = {c: i for i, c in enumerate(labels)}
        unknown = sorted(set(ya) - set(index))
        if unknown:
            raise ValueError(f"labels not known to the classifier: {unknown}")
        y_idx = np.array([index[v] for v in ya])
        pred = proba.argmax(axis=1)
        p, r, f, s = precision_recall_fscore_support(y_idx, pred, labels=range(len(labels)), zero_division=0)
        return {
            "n": len(ya),
            "accuracy": float((pred == y_idx).mean()),
            "macro_f1": float(np.mean(f[s > 0])),
            "ece": expected_calibration_error(proba, y_idx),
            "log_loss": float(-np.log(proba[np.arange(len(y_idx)), y_idx] + 1e-12).mean()),
            "per_class": {
                lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                for i, lab in enumerate(labels)
            },
            "labels": labels,
            "confusion": confusion_matrix(y_idx, pred, labels=range(len(labels))).tolist(),
        }

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``classifier.joblib`` and ``manifest.json`` into ``directory`` (created if missing)."""
        import joblib

        self._check_fitted()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        payload = {"coef": self.coef_, "intercept": self.intercept_, "temperature": float(self.temperature_)}
        joblib.dump(payload, out / "classifier.joblib", compress=3)
        manifest = dict(self.manifest_)
        manifest["classifier_sha256"] = hashlib.sha256((out / "classifier.joblib").read_bytes()).hexdigest()
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        self.manifest_ = manifest
        return out

    @classmethod
    def load(cls, directory: str | Path, *, embedder_name: str | None = None,
             embedder_dim: int | None = None) -> TaskClassifier:
        """Load an artifact written by :meth:`save` and check it.

        Args:
            directory: the artifact folder.
            embedder_name, embedder_dim: when given, the manifest must name this embedder.

        Raises:
            NotFittedError: the folder or one of its files is missing.
            ConfigError: the manifest is unreadable, of another format version, inconsistent with the
                stored arrays, or names another embedder than the one expected.
        """
        import joblib

        folder = Path(directory)
        man_path, model_path = folder / "manifest.json", folder / "classifier.joblib"
        for p in (man_path, model_path):
            if not p.is_file():
                raise NotFittedError(f"no task classifier at {folder}: {p.name} is missing")
        try:
            manifest = json.loads(man_path.read_text())
            labels = [str(v) for v in manifest["labels"]]
            emb = manifest["embedder"]
            version = manifest["format_version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(str(man_path), f"unreadable classifier manifest ({exc})") from exc
        if version != FORMAT_VERSION:
            raise ConfigError(str(man_path), f"format_version {version!r}; this library reads {FORMAT_VERSION}")
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
        if manifest.get("classifier_sha256") not in (None, digest):
            raise ConfigError(str(model_path), "sha256 does not match the manifest (file changed or corrupt)")
        if embedder_name is not None and emb.get("name") != embedder_name:
            raise ConfigError(f"{man_path}:embedder.name",
                              f"classifier was trained on {emb.get('name')!r} embeddings, not {embedder_name!r}")
        if embedder_dim is not None and emb.get("dim") != embedder_dim:
            raise ConfigError(f"{man_path}:embedder.dim",
                              f"classifier expects {emb.get('dim')}-d embeddings, the embedder gives {embedder_dim}")
        payload = joblib.load(model_path)
        coef = np.ascontiguousarray(payload["coef"], dtype=np.float32)  # row-major: the serving kernel's layout
        intercept = np.ascontiguousarray(payload["intercept"], dtype=np.float32)
        if coef.shape != (len(labels), emb.get("dim")) or intercept.shape != (len(labels),):
            raise ConfigError(str(man_path), f"labels/dim ({len(labels)}, {emb.get('dim')}) do not match the "
                                             f"stored weights {coef.shape}")
        self = cls(**{k: v for k, v in manifest.get("params", {}).items()
                      if k in ("C", "max_iter", "calibrate", "seed")})
        self.classes_ = np.asarray(labels)
        self.labels_ = [str(c) for c in labels]
        self.coef_, self.intercept_ = coef, intercept
        self.temperature_ = float(payload["temperature"])
        self.manifest_ = manifest
        self._load_kernel()  # a loaded classifier serves: no compilation on the first request
        return self

    def check_embedder(self, embedder: Any) -> None:
        """Raise ConfigError unless ``embedder`` (anything with ``name`` and ``dim``) matches the manifest."""
        self._check_fitted()
        emb: Mapping[str, Any] = self.manifest_.get("embedder", {})
        if emb.get("name") and (emb.get("name"), emb.get("dim")) != (embedder.name, embedder.dim):
            raise ConfigError("classifier.embedder",
                              f"classifier expects {emb.get('name')!r}/{emb.get('dim')}, "
                              f"embedder is {embedder.name!r}/{embedder.dim}")
