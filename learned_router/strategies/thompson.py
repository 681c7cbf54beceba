"""The learned policy: contextual Thompson sampling over the eligible arms.

Utility of arm *a* for a request, in quality units::

    u_a = w_quality · q_a  -  w_cost · cost_per_1k_a  -  w_latency · latency_s_a

* ``q_a`` is a Thompson draw of the arm's quality from :class:`LinearTS` for the request's context vector
  (:class:`ContextTransform` of the embedding, task probabilities and prompt length);
* ``cost_per_1k_a`` is the predicted cost of **1,000 such requests** in USD (``ArmView.est_cost_usd`` × 1000),
  so ``w_cost = 0.05`` trades 0.05 quality for one dollar per thousand requests;
* ``latency_s_a`` is the arm's live latency estimate in seconds (``ArmView.latency_s``).

Weights come from ``Context.weights`` (request, else tenant, else config). The first arm is drawn from the
Monte-Carlo propensity vector P(argmax u = a), so the logged propensity is the probability actually used;
the other arms follow by sampled utility (the failover order). ``select`` never mutates learning state.
The arithmetic of a decision (context vector, posterior, Monte-Carlo propensities, ranking) runs in the
compiled kernels of ``learned_router._kernels``; ``LinearTS.mean``/``std`` are the batch numpy equivalents.

Arms unknown to the trained state start from their configured ``quality_prior`` (cold start) and join the
model on their first update. A strategy without a usable state reports ``ready == False`` and the router
falls back to the rules. An optional exploration cap limits the probability of arms whose posterior mean
quality is below ``quality_floor`` to ``exploration_cap`` (unless no arm clears the floor).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from learned_router.errors import PolicyStateError
from learned_router.strategies.base import ArmView, Context, Features, Ranking
from learned_router.strategies.context import ContextTransform
from learned_router.strategies.linear_ts import LinearTS
from learned_router.types import ArmId

__all__ = ["MANIFEST_FILE", "STATE_FILE", "ThompsonStrategy", "fit_thompson", "load_learned_strategy"]

log = logging.getLogger(__name__)

STATE_FILE = "policy_state.json"
MANIFEST_FILE = "policy_manifest.json"
_KIND = "thompson"
_VERSION = 1


class ThompsonStrategy:
    """Contextual Thompson sampling behind the Strategy interface.

    Args:
        model: the per-arm quality model (None: cold, not ready).
        transform: the fitted context transform (None: a bias-only context).
        arms: the arm ids of the model's arms, in model order.
        priors: configured quality prior per arm id, for arms the model does not know.
        n_draws: Monte-Carlo draws for the propensities.
        explore: False ranks by posterior mean (propensity 1 on the first arm).
        quality_floor, exploration_cap: cap the probability of arms with mean quality below the floor.
        min_observations: evidence needed before ``ready`` is True.
        version: a label logged with each decision (``Ranking.info["version"]``).
        error: why a state could not be used; a strategy with an error is never ready and ignores updates.
        embedder: the name of the embedder the policy was trained on ("" when unknown); a router whose
            embedder differs does not use the policy (see ``planning.build_planner``).
    """

    name = "learned"

    def __init__(self, model: LinearTS | None = None, transform: ContextTransform | None = None,
                 arms: Sequence[str] = (), *, priors: Mapping[str, float] | None = None, n_draws: int = 200,
                 explore: bool = True, quality_floor: float | None = None, exploration_cap: float = 1.0,
                 min_observations: int = 20, version: str = "", error: str | None = None,
                 embedder: str = "") -> None:
        if model is not None and model.n_arms != len(arms):
            raise ValueError(f"the model has {model.n_arms} arms but {len(arms)} arm ids were given")
        if transform is not None and model is not None and transform.dim != model.dim:
            raise ValueError(f"the transform gives {transform.dim} features but the model expects {model.dim}")
        if not 0 < exploration_cap <= 1:
            raise ValueError(f"exploration_cap must be in (0, 1], got {exploration_cap}")
        self.model = model
        self.transform = transform
        self.arms: list[str] = [str(a) for a in arms]
        self.priors = dict(priors or {})
        self.n_draws = int(n_draws)
        self.explore = bool(explore)
        self.quality_floor = quality_floor
        self.exploration_cap = float(exploration_cap)
        self.min_observations = int(min_observations)
        self.version = version
        self.error = error
        self.embedder = embedder
        self._index = {a: i for i, a in enumerate(self.arms)}
        # the model's total evidence, kept here by update() so that ``ready`` costs no numpy call per request
        self._evidence = 0.0 if model is None else float(model.n_obs_.sum())
        self._lock = threading.Lock()
        self._blocks: dict[int, NDArray[np.float64]] = {}  # see _normals
        self._zero_rows: dict[int, NDArray[np.float64]] = {}  # see _no_draws
        self._buffers: dict[int, tuple[NDArray[Any], ...]] = {}  # see _run
        self._offer_cache: dict[tuple[str, ...], tuple[NDArray[np.int64], NDArray[np.float64]]] = {}
        from learned_router import _kernels  # numba: imported when a policy is first built

        _kernels.warm_up()
        self._kernel = _kernels.sample_utilities

    @property
    def ready(self) -> bool:
        """True when a valid state with enough evidence is loaded (else the router uses the rules)."""
        return self.error is None and self.model is not None and self._evidence >= self.min_observations

    # --------------------------------------------------------------- context
    def context(self, features: Features) -> NDArray[np.float64]:
        """The context vector of a request (raises ValueError when the embedding does not fit the state)."""
        if self.transform is None:
            return np.ones(1 if self.model is None else self.model.dim)
        return self.transform.transform_one(features.embedding, features.input_tokens, features.task_probs)

    def posterior(self, features: Features, arms: Sequence[ArmView]) -> tuple[NDArray[np.float64],
                                                                                NDArray[np.float64]]:
        """Posterior mean and draw standard deviation of quality for each offered arm (cold arms: prior)."""
        k = len(arms)
        with self._lock:
            mean, std, *_ = self._run(features, arms, np.zeros(k), 1.0, self._no_draws(k), 0, 0.0, True)
            return mean.copy(), std.copy()

    def _run(self, features: Features, arms: Sequence[ArmView], offsets: NDArray[np.float64], w_quality: float,
             normals: NDArray[np.float64], n_draws: int, pick: float, with_std: bool) -> tuple[Any, ...]:
        """One call of the compiled decision kernel (``_kernels.sample_utilities``); the caller holds the
        state lock, and reads the returned buffers (mean, std, scores, counts, order, first) before
        releasing it: they are reused by the next decision."""
        x = self.context(features)
        idx, cold_mean = self._offered(arms)
        model = self.model
        if model is None:
            mu, ainv, alpha, scale = np.zeros((0, len(x))), np.zeros((0, len(x), len(x))), 1.0, 0.25
        else:
            mu, ainv, alpha, scale = model.mu_, model.Ainv_, model.alpha, model.scale
        k = len(arms)
        buf = self._buffers.get(k)
        if buf is None:
            buf = self._buffers[k] = (np.empty(k), np.empty(k), np.empty(k), np.empty(k, np.int64),
                                      np.empty(k, np.int64))
        mean, std, scores, counts, order = buf
        first = self._kernel(x, mu, ainv, idx, cold_mean, alpha, scale, float(w_quality), offsets, normals,
                             n_draws, pick, with_std, mean, std, counts, scores, order)
        return mean, std, scores, counts, order, int(first)

    def _offered(self, arms: Sequence[ArmView]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Model index per offered arm (-1: unknown to the model) and the quality prior of each, memoised
        per offered set (a decision offers the same few sets again and again)."""
        key = tuple([a.arm for a in arms])
        hit = self._offer_cache.get(key)
        if hit is None:
            if len(self._offer_cache) >= 256:
                self._offer_cache.clear()
            idx = np.array([self._index.get(str(a.arm), -1) for a in arms], dtype=np.int64)
            cold = np.array([self.priors.get(str(a.arm), a.provider.quality_prior) for a in arms], dtype=np.float64)
            hit = self._offer_cache[key] = (idx, cold)
        return hit

    def _no_draws(self, k: int) -> NDArray[np.float64]:
        zeros = self._zero_rows.get(k)
        if zeros is None:
            zeros = self._zero_rows[k] = np.zeros((1, k))
        return zeros

    # ---------------------------------------------------------------- select
    def select(self, ctx: Context, arms: Sequence[ArmView], rng: np.random.Generator) -> Ranking:
        """Rank the offered arms by sampled utility. Never mutates learning state."""
        if not arms:
            raise ValueError("select needs at least one arm")
        w = ctx.weights
        k = len(arms)
        names = [a.arm for a in arms]
        offsets = np.array([-w.cost * 1000.0 * a.est_cost_usd - w.latency * a.latency_s for a in arms])
        explore = self.explore and k > 1
        with self._lock:
            if explore:
                u0, pick = rng.random(2).tolist()  # one call for both uniforms (each rng call costs µs)
                mean, _, scores, counts, order, first = self._run(
                    ctx.features, arms, offsets, w.quality, self._normals(rng, k, u0), self.n_draws, pick, True)
                n = self.n_draws
                prop_list = [c / n for c in counts.tolist()]
                if self.quality_floor is not None and self.exploration_cap < 1.0:
                    prop_list = self._cap(np.array(prop_list), mean).tolist()
                    first = _inverse_cdf(prop_list, pick)
            else:
                # ranking by the posterior mean: the spread is not needed (nor its d² cost per arm)
                _, _, scores, _, order, first = self._run(ctx.features, arms, offsets, w.quality,
                                                          self._no_draws(k), 0, 0.0, False)
                prop_list = [0.0] * k
                prop_list[first] = 1.0
            score_list = scores.tolist()
            rest = order.tolist()
        rest.remove(first)
        return Ranking(
            arms=(names[first], *[names[i] for i in rest]),
            scores=dict(zip(names, score_list, strict=True)),
            propensities=dict(zip(names, prop_list, strict=True)),
            info={"strategy": self.name, "version": self.version},
        )

    def _normals(self, rng: np.random.Generator, k: int, u: float) -> NDArray[np.float64]:
        """``n_draws`` rows of standard normals for ``k`` arms: the window at ``u`` (uniform in [0, 1)) of a
        block drawn once from ``rng`` (drawing 2,000 fresh normals per decision costs more than the rest of
        the decision). The MC propensities stay unbiased, and the logged propensity is exact whatever the
        draws: the first arm is sampled from the propensity vector itself."""
        block = self._blocks.get(k)
        if block is None:  # one contiguous block per number of offered arms
            block = rng.standard_normal((self.n_draws * 16, k))
            self._blocks[k] = block
        start = int(u * (block.shape[0] - self.n_draws))
        return block[start:start + self.n_draws]

    def _cap(self, props: NDArray[np.float64], mean: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.quality_floor is None or self.exploration_cap >= 1.0:
            return props
        low = mean < self.quality_floor
        if low.all() or not low.any():
            return props
        capped = np.where(low, np.minimum(props, self.exploration_cap), props)
        excess = props.sum() - capped.sum()
        high = ~low
        mass = capped[high].sum()
        if mass > 0:
            capped[high] += excess * capped[high] / mass
        else:
            capped[high] += excess / high.sum()
        return capped / capped.sum()

    # ---------------------------------------------------------------- update
    def update(self, arm: ArmId, features: Features, reward: float, *, cost_usd: float = 0.0,
               latency_s: float = 0.0, weight: float = 1.0) -> None:
        """Learn from one observed quality ``reward`` in [0, 1] of ``arm``, counted as ``weight``
        observations (the configured weight of the signal's source). Unknown arms join the model from
        their prior. Cost and latency are tracked by the router, not learned here."""
        if self.error is not None or not np.isfinite(reward):
            return
        with self._lock:
            if self.model is None:
                self.model = LinearTS(1, 1 if self.transform is None else self.transform.dim,
                                      [self.priors.get(str(arm), 0.5)], scale=0.25)
                self.arms, self._index = [str(arm)], {str(arm): 0}
                self._offer_cache.clear()
            x = self.context(features)
            idx = self._index.get(str(arm))
            if idx is None:
                idx = self.model.add_arm(self.priors.get(str(arm), 0.5))
                self.arms.append(str(arm))
                self._index[str(arm)] = idx
                self._offer_cache.clear()  # offered sets now map this arm to the model
            self.model.partial_fit(idx, x, float(reward), float(weight))
            self._evidence = float(self.model.n_obs_.sum())

    # ----------------------------------------------------------- persistence
    def to_state(self) -> dict[str, Any]:
        """A versioned JSON-safe dict: arms, the model, the transform and the settings."""
        if self.model is None:
            raise PolicyStateError("a cold strategy has no state to save")
        return {
            "kind": _KIND, "version": _VERSION, "arms": list(self.arms), "model": self.model.to_state(),
            "transform": None if self.transform is None else self.transform.to_state(),
            "settings": {"n_draws": self.n_draws, "explore": self.explore, "quality_floor": self.quality_floor,
                         "exploration_cap": self.exploration_cap, "min_observations": self.min_observations},
            "policy_version": self.version,
        }

    @classmethod
    def from_state(cls, state: Any, *, priors: Mapping[str, float] | None = None) -> ThompsonStrategy:
        """Rebuild from :meth:`to_state`; raises PolicyStateError when corrupt or inconsistent."""
        if not isinstance(state, dict) or state.get("kind") != _KIND or state.get("version") != _VERSION:
            raise PolicyStateError("not a Thompson policy state of a supported version")
        model = LinearTS.from_state(state.get("model"))
        tstate = state.get("transform")
        transform = None if tstate is None else ContextTransform.from_state(tstate)
        arms = state.get("arms")
        if not isinstance(arms, list) or len(arms) != model.n_arms or len(set(map(str, arms))) != len(arms):
            raise PolicyStateError("the arm list does not match the model")
        if transform is not None and transform.dim != model.dim:
            raise PolicyStateError(f"the transform gives {transform.dim} features, the model expects {model.dim}")
        settings = state.get("settings") or {}
        if not isinstance(settings, dict):
            raise PolicyStateError("settings must be a mapping")
        try:
            return cls(model, transform, arms, priors=priors, version=str(state.get("policy_version", "")),
                       **settings)
        except (TypeError, ValueError) as exc:
            raise PolicyStateError(f"invalid policy settings: {exc}") from exc

    def save(self, folder: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``policy_state.json`` and ``policy_manifest.json`` (sha256, arms, evidence) into ``folder``."""
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            payload = json.dumps(self.to_state()).encode()
        (root / STATE_FILE).write_bytes(payload)
        manifest = {
            "kind": _KIND, "version": _VERSION, "state_file": STATE_FILE,
            "sha256": hashlib.sha256(payload).hexdigest(), "arms": list(self.arms),
            "n_obs": {a: float(n) for a, n in zip(self.arms, self.model.n_obs_ if self.model else [], strict=False)},
            "dim": self.model.dim if self.model else 0, "policy_version": self.version,
            "created_at": datetime.now(UTC).isoformat(), "embedder": self.embedder,
            "task_labels": list(self.transform.task_labels) if self.transform is not None else [],
            **dict(extra or {}),
        }
        (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        return root

    @classmethod
    def load(cls, folder: str | Path, *, priors: Mapping[str, float] | None = None) -> ThompsonStrategy:
        """Read a folder written by :meth:`save`, checking the manifest's checksum.

        Raises:
            PolicyStateError: files missing, checksum mismatch, or a corrupt state.
        """
        root = Path(folder)
        try:
            manifest = json.loads((root / MANIFEST_FILE).read_text())
            payload = (root / str(manifest.get("state_file", STATE_FILE))).read_bytes()
        except (OSError, ValueError) as exc:
            raise PolicyStateError(f"cannot read the policy in {root}: {exc}") from exc
        if not isinstance(manifest, dict) or hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
            raise PolicyStateError(f"the policy state in {root} does not match its manifest checksum")
        try:
            state = json.loads(payload)
        except ValueError as exc:
            raise PolicyStateError(f"the policy state in {root} is not valid JSON: {exc}") from exc
        strategy = cls.from_state(state, priors=priors)
        strategy.embedder = str(manifest.get("embedder") or "")
        return strategy


def _inverse_cdf(probs: Sequence[float], u: float) -> int:
    """The index where the cumulative sum of ``probs`` first exceeds ``u`` (the last index at worst)."""
    acc = 0.0
    for i, p in enumerate(probs):  # over k values plain Python beats two numpy calls
        acc += p
        if u < acc:
            return i
    return len(probs) - 1


def fit_thompson(embeddings: ArrayLike, input_tokens: ArrayLike, arms: Sequence[str], arm_index: ArrayLike,
                 rewards: ArrayLike, *, task_probs: ArrayLike | None = None, task_labels: Sequence[str] = (),
                 weights: ArrayLike | None = None, priors: Mapping[str, float] | None = None,
                 n_components: int = 48, whiten: bool = False, alpha: float = 1.0, scale: float = 0.25,
                 forgetting: float = 1.0, n_clusters: int = 0, version: str = "", **settings: Any
                 ) -> ThompsonStrategy:
    """Fit the context transform and the per-arm model from logged rows (context i, arm ``arm_index[i]``,
    quality ``rewards[i]``, importance ``weights[i]``) and return a ready strategy."""
    transform = ContextTransform(n_components, whiten=whiten, task_labels=task_labels, n_clusters=n_clusters)
    transform.fit(embeddings, input_tokens, task_probs)
    X = transform.transform(embeddings, input_tokens, task_probs)
    pri = [float((priors or {}).get(a, 0.5)) for a in arms]
    model = LinearTS(len(arms), transform.dim, pri, alpha=alpha, scale=scale, forgetting=forgetting)
    model.fit(X, arm_index, rewards, weights)
    return ThompsonStrategy(model, transform, arms, priors=priors, version=version, **settings)


def load_learned_strategy(path: str | Path, cfg: Any, *, embedder: str | None = None) -> ThompsonStrategy:
    """The learned strategy for a router config: the policy in ``path``, priors from the providers.
    ``embedder`` is the name of the router's embedder.

    Never raises for a bad state: the strategy then carries ``error`` and is not ready, so the router
    falls back to its rule strategy. A policy trained on another embedder's vectors counts as a bad state:
    same width is no proof of the same space (MiniLM and its static distillation are both 384-d), and
    routing on it would be silently wrong.
    """
    priors = {p.arm: p.quality_prior for p in cfg.providers}
    explore = bool(getattr(cfg.routing, "exploration", True))
    try:
        strategy = ThompsonStrategy.load(path, priors=priors)
        if strategy.embedder and embedder and strategy.embedder != embedder:
            raise PolicyStateError(f"the policy was trained on {strategy.embedder!r} embeddings; this router "
                                   f"embeds with {embedder!r} (set embedder.kind to match, or retrain)")
    except PolicyStateError as exc:
        log.warning("learned policy unusable, the rules will route: %s", exc)
        return ThompsonStrategy(priors=priors, error=str(exc))
    strategy.explore = explore
    return strategy
