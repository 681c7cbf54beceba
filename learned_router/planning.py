"""Planning a request: preset and weights → features → eligibility → strategy → Decision.

No provider I/O happens here. When the configured policy cannot decide (cold start, missing features, an
exception inside it), the configured rule strategy decides and the Decision says why in ``fallback_reason``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from learned_router.analytics import Analytics
from learned_router.breaker import CircuitBreaker
from learned_router.budget import BudgetLedger
from learned_router.config import PresetConfig, ProviderConfig, RouterConfig
from learned_router.eligibility import EligibilityRules, filter_arms
from learned_router.errors import NoEligibleArmError, RequestError
from learned_router.protocols import Clock, SystemClock
from learned_router.stats import LiveStats
from learned_router.strategies import RULES
from learned_router.strategies.base import Context, Features, Ranking, Strategy
from learned_router.types import ArmId, ChatRequest, Decision, Weights, arm_id, split_arm

__all__ = ["Assignment", "Planner", "build_planner"]

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Assignment:
    """An experiment's choice for one request."""

    experiment: str
    variant: str
    probability: float
    strategy: str


@dataclass
class Planner:
    config: RouterConfig
    stats: LiveStats
    breaker: CircuitBreaker
    budget: BudgetLedger
    analytics: Analytics
    strategies: dict[str, Strategy]
    clock: Clock
    rng: np.random.Generator
    features: Any = None  # a FeatureExtractor (embedder + classifier), or None
    assign: Callable[[ChatRequest], Assignment | None] | None = None
    by_arm: dict[ArmId, ProviderConfig] = field(default_factory=dict)
    _rng_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.by_arm = {arm_id(p.name, p.model): p for p in self.config.providers}
        self._routable = [p for p in self.config.providers if p.route]
        self._routable_ids = [arm_id(p.name, p.model) for p in self._routable]
        self._names = {p.name: arm_id(p.name, p.model) for p in self._routable}
        r = self.config.routing
        self._rules = EligibilityRules(r.availability_threshold, r.availability_min_calls)
        self._default_weights = Weights(**r.weights.model_dump())
        self._balanced = (r.balanced_weights.quality, r.balanced_weights.cost, r.balanced_weights.latency)

    # -- model field: presets and pinning -------------------------------------------------------------
    def resolve_model(self, model: str | None) -> tuple[PresetConfig | None, set[str] | None]:
        """``None``/``auto`` → defaults; a preset name → its overrides; an arm or provider name → pinned."""
        if model is None or model == AUTO:
            return None, None
        presets = self.config.routing.presets
        if model in presets:
            return presets[model], None
        if model in self._names.values():
            return None, {model}
        if model in self._names:
            return None, {self._names[model]}
        known = [AUTO, *presets, *self._names]
        raise RequestError("model", f"unknown model '{model}'; use one of {known}")

    def weights_for(self, req: ChatRequest, preset: PresetConfig | None) -> Weights:
        if req.weights is not None:
            return req.weights
        if preset is not None and preset.weights is not None:
            return Weights(**preset.weights.model_dump())
        if req.tenant is not None:
            tenant = self.config.tenants.get(req.tenant)
            if tenant is not None and tenant.weights is not None:
                return Weights(**tenant.weights.model_dump())
        return self._default_weights

    # -- planning ---------------------------------------------------------------------------------------
    def plan(self, req: ChatRequest) -> tuple[Decision, Features]:
        preset, pinned = self.resolve_model(req.model)
        assignment = self.assign(req) if self.assign is not None and pinned is None else None
        name = req.strategy or (preset.strategy if preset else None) or (
            assignment.strategy if assignment else None) or self.config.routing.strategy
        if name not in self.strategies and name not in RULES and name != "learned":
            raise RequestError("strategy", f"unknown strategy '{name}'; use one of {sorted({*RULES, 'learned'})}")
        weights = self.weights_for(req, preset)
        features, fallback = self._features(req, name)
        eligible, excluded = filter_arms(
            self._routable, req, features, self.stats.snapshot(), now=self.clock.monotonic(),
            rules=self._rules, breaker_refusing=self.breaker.refusing(self._routable_ids),
            budget_reason=self.budget.provider_headroom if self.budget.provider_limits else None,
            pinned=pinned, availability=self.stats.availability,
            arm_ids=self._routable_ids,
        )
        if not eligible:
            raise NoEligibleArmError(excluded)
        if req.tenant is not None:
            self.budget.check_tenant(req.tenant, min(a.est_cost_usd for a in eligible))
        r = self.config.routing
        ctx = Context(
            request=req, features=features, weights=weights,
            quality_threshold=preset.quality_threshold if preset and preset.quality_threshold is not None
            else r.quality_threshold,
            balanced_weights=self._balanced,
            task_preferences=r.task_preferences,
        )
        used, ranking, reason = self._select(name, ctx, eligible, fallback)
        first = ranking.arms[0]
        provider, model = split_arm(first)
        decision = Decision(
            request_id=req.request_id, arm=first, provider=provider, model=model, strategy=used,
            # The strategy built these mappings for this decision alone: no defensive copies on the hot path.
            ranking=ranking.arms, scores=ranking.scores, propensities=ranking.propensities,
            excluded=excluded, fallback_reason=reason,
            policy_version=str(ranking.info.get("version", "")),
            experiment=assignment.experiment if assignment else None,
            variant=assignment.variant if assignment else None,
            assignment_p=assignment.probability if assignment else None,
            task_probs=features.task_probs, input_tokens_est=features.input_tokens,
            output_tokens_est=features.output_tokens_est,
            est_cost_usd={a.arm: a.est_cost_usd for a in eligible}, weights=weights,
        )
        return decision, features

    def _features(self, req: ChatRequest, strategy: str) -> tuple[Features, str | None]:
        """Token estimates always; the embedding and task probabilities when the strategy uses them (or the
        log wants every embedding). Returns the features and, when the strategy needed the model path and
        it failed, why (the rules then decide)."""
        needed = strategy.startswith("learned") or (strategy == "task" and req.task_hint is None)
        reason: str | None = None
        if self.features is not None and (needed or self.config.log.embed_for_log):
            try:
                return self.features.extract(req), None
            except Exception as exc:  # noqa: BLE001 - any failure of the model path falls back to the rules
                log.warning("feature extraction failed, falling back to rules: %s", type(exc).__name__)
                reason = f"feature extraction failed: {type(exc).__name__}: {exc}"
        elif needed:
            reason = "no embedder/classifier configured"
        base = Features(input_tokens=max(1, math.ceil(len(req.prompt_text()) / 4)),
                        output_tokens_est=req.max_tokens or 256,
                        task_probs={req.task_hint: 1.0} if req.task_hint else {})
        return base, reason if needed else None  # a failure matters only to a strategy that needed them

    def _select(self, name: str, ctx: Context, eligible: list[Any],
                fallback: str | None) -> tuple[str, Ranking, str | None]:
        strategy = self.strategies.get(name)
        reason = fallback
        if strategy is None and name.startswith("learned"):
            reason = reason or "no trained model loaded (cold start)"
        elif strategy is not None and not getattr(strategy, "ready", True):
            error = getattr(strategy, "error", None)
            reason = reason or (f"learned policy unusable: {error}" if error
                                else "learned policy not ready (cold start or invalid state)")
        if strategy is not None and reason is None:
            try:
                with self._rng_lock:
                    ranking = strategy.select(ctx, eligible, self.rng)
                return name, (self._explore(ranking) if name in RULES else ranking), None
            except Exception as exc:  # noqa: BLE001 - a failing policy must never fail the request
                log.warning("strategy %s failed, falling back to rules: %s", name, type(exc).__name__)
                reason = f"strategy {name} failed: {type(exc).__name__}: {exc}"
        fb = self.config.routing.fallback_strategy if name not in RULES else name
        return fb, self._explore(self.strategies[fb].select(ctx, eligible, self.rng)), reason

    def _explore(self, ranking: Ranking) -> Ranking:
        """Epsilon-greedy exploration around a rule's choice (``routing.exploration_epsilon``): with
        probability epsilon the first arm is drawn uniformly from the offered arms. The logged propensities
        are exact, which is what lets training evaluate other policies on this traffic."""
        eps = self.config.routing.exploration_epsilon
        k = len(ranking.arms)
        if eps <= 0 or k < 2:
            return ranking
        with self._rng_lock:
            explore = self.rng.random() < eps
            pick = int(self.rng.integers(k)) if explore else 0
        arms = ranking.arms if pick == 0 else (ranking.arms[pick], *ranking.arms[:pick], *ranking.arms[pick + 1:])
        props = {str(a): eps / k for a in ranking.arms}
        props[str(ranking.arms[0])] += 1.0 - eps
        return Ranking(arms, ranking.scores, props, {**ranking.info, "explored": pick != 0})

    def learn(self, arm: ArmId, features: Features, quality: float, *, cost_usd: float, latency_s: float,
              weight: float = 1.0) -> None:
        """Credit ``arm`` with an observed quality; ``weight`` is the configured weight of its source."""
        if weight <= 0:
            return
        self.stats.record_quality(arm, quality)
        for strategy in self.strategies.values():
            strategy.update(arm, features, quality, cost_usd=cost_usd, latency_s=latency_s, weight=weight)


def build_planner(cfg: RouterConfig, *, clock: Clock | None = None, seed: int | None = None,
                  embedder: Any = None) -> Planner:
    """Wire a Planner from config: state objects, rule strategies, the learned policy and features when a
    model is configured, and experiments. Model files are read here, never at import."""
    clock = clock or SystemClock()
    r = cfg.routing
    stats = LiveStats({arm_id(p.name, p.model): (p.quality_prior, p.latency_prior_s) for p in cfg.providers},
                      alpha=r.ewma_alpha, heal_half_life_s=r.availability_half_life_s, clock=clock)
    breaker_store, budget_backend = _shared_state(cfg)
    breaker = CircuitBreaker(failure_threshold=cfg.breaker.failure_threshold,
                             reset_timeout_s=cfg.breaker.reset_timeout_s, clock=clock, store=breaker_store)
    budget = BudgetLedger(provider_limits=cfg.budgets.providers, tenant_limits=cfg.budgets.tenants,
                          window=cfg.budgets.window, clock=clock, backend=budget_backend)
    strategies: dict[str, Strategy] = {name: cls() for name, cls in RULES.items()}
    features = _build_features(cfg, embedder)
    if _wants_learned(cfg):
        strategies["learned"] = _build_learned(cfg, cfg.routing.model_path, features)
    for exp in cfg.experiments:
        for v in exp.variants:
            if v.strategy == "learned" and v.model_path is not None:
                strategies[_variant_strategy(exp.name, v.name)] = _build_learned(cfg, v.model_path, features)
    assign = _build_assigner(cfg)
    return Planner(cfg, stats, breaker, budget, Analytics(), strategies, clock,
                   np.random.default_rng(seed if seed is not None else r.seed), features=features, assign=assign)


def _shared_state(cfg: RouterConfig) -> tuple[Any, Any]:
    """(breaker store, budget backend): None for in-process state, else Redis-backed ones."""
    if cfg.state.backend == "memory":
        return None, None
    from learned_router.shared_state import RedisBreakerStore, RedisBudgetBackend, connect

    client = connect(cfg.state.redis_url)
    return (RedisBreakerStore(client, prefix=cfg.state.prefix + "breaker:"),
            RedisBudgetBackend(client, prefix=cfg.state.prefix + "budget:"))


def _wants_model(cfg: RouterConfig) -> bool:
    names = {cfg.routing.strategy, *(p.strategy for p in cfg.routing.presets.values())}
    names |= {v.strategy for e in cfg.experiments for v in e.variants}
    return bool({"learned", "task"} & names)


def _build_features(cfg: RouterConfig, embedder: Any) -> Any:
    if not (_wants_model(cfg) or cfg.log.embed_for_log):
        return None
    from learned_router.features import build_feature_extractor
    from learned_router.model_store import resolve_model

    classifier_dir = None
    if cfg.routing.model_path is not None:
        classifier_dir = resolve_model(cfg.routing.model_path, tracking_uri=cfg.routing.tracking_uri).classifier_dir
    return build_feature_extractor(cfg, embedder=embedder, classifier_dir=classifier_dir)


def _wants_learned(cfg: RouterConfig) -> bool:
    names = {cfg.routing.strategy, *(p.strategy for p in cfg.routing.presets.values())}
    names |= {v.strategy for e in cfg.experiments for v in e.variants if v.model_path is None}
    return "learned" in names


def _variant_strategy(experiment: str, variant: str) -> str:
    return f"learned@{experiment}/{variant}"


def _build_learned(cfg: RouterConfig, path: str | None, features: Any) -> Strategy:
    """The learned policy from ``path`` (see ``model_store.resolve_model``), or a cold one that learns
    online from feedback and is not used until it has seen enough (the rules route meanwhile). A policy
    trained on another embedder than the one of ``features`` is not used."""
    from learned_router.model_store import resolve_model
    from learned_router.strategies.thompson import ThompsonStrategy, load_learned_strategy

    priors = {p.arm: p.quality_prior for p in cfg.providers}
    if path is None:
        return ThompsonStrategy(priors=priors, explore=cfg.routing.exploration)
    embedder = getattr(getattr(features, "embedder", None), "name", None)
    files = resolve_model(path, tracking_uri=cfg.routing.tracking_uri)
    if files.problem is not None:
        return ThompsonStrategy(priors=priors, error=files.problem)
    return load_learned_strategy(files.policy_dir, cfg, embedder=embedder)


def _build_assigner(cfg: RouterConfig) -> Callable[[ChatRequest], Assignment | None] | None:
    active = [e for e in cfg.experiments if e.enabled]
    if not active:
        return None
    from learned_router.experiments import make_assigner

    assigner = make_assigner(active)
    own_model = {(e.name, v.name) for e in active for v in e.variants
                 if v.strategy == "learned" and v.model_path is not None}

    def assign(req: ChatRequest) -> Assignment | None:
        a = assigner(req)
        if a is not None and (a.experiment, a.variant) in own_model:
            return Assignment(a.experiment, a.variant, a.probability, _variant_strategy(a.experiment, a.variant))
        return a

    return assign


def default_models_dir() -> Path:
    """The project's ``models/`` folder (beside the package in a source checkout)."""
    return Path(__file__).resolve().parent.parent / "models"
