"""YAML configuration: parsed strictly (phase 1, pydantic with ``extra="forbid"``), then resolved
(phase 2: cross-references, secrets). Every problem is a ``ConfigError`` naming the key.

A minimal file::

    providers:
      - name: gpt-4o-mini
        kind: openai
        base_url: https://api.openai.com/v1
        model: gpt-4o-mini
        api_key: env:OPENAI_API_KEY
        price_in_per_mtok: 0.15
        price_out_per_mtok: 0.6
    routing:
      strategy: balanced
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from learned_router.errors import ConfigError

__all__ = [
    "BreakerConfig",
    "BudgetsConfig",
    "ExperimentConfig",
    "FailoverConfig",
    "LogConfig",
    "ProviderConfig",
    "RouterConfig",
    "RoutingConfig",
    "TenantConfig",
    "load_config",
    "parse_config",
    "resolve_secret",
]

STRATEGIES = ("cost", "quality", "latency", "balanced", "task", "learned")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class WeightsConfig(_Strict):
    quality: float = Field(default=1.0, ge=0)
    cost: float = Field(default=0.0, ge=0)
    latency: float = Field(default=0.0, ge=0)


class BalancedWeights(_Strict):
    quality: float = Field(default=0.4, ge=0)
    cost: float = Field(default=0.3, ge=0)
    latency: float = Field(default=0.3, ge=0)


class ProviderConfig(_Strict):
    name: str = Field(min_length=1)
    kind: Literal["openai", "anthropic", "gemini"]
    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key: str | None = None
    price_in_per_mtok: float = Field(ge=0)
    price_out_per_mtok: float = Field(ge=0)
    region: str | None = None
    quality_prior: float = Field(default=0.8, ge=0, le=1)
    latency_prior_s: float = Field(default=1.0, gt=0)
    max_context_tokens: int = Field(default=128_000, gt=0)
    max_output_tokens: int = Field(default=1024, gt=0)
    tasks: dict[str, float] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    route: bool = True  # False: callable (e.g. as the judge) but never a routing target

    @field_validator("api_key")
    @classmethod
    def _key_is_a_reference(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("env:"):
            raise ValueError("must be a reference 'env:VARIABLE', never the key itself")
        return value

    @field_validator("tasks")
    @classmethod
    def _task_scores(cls, value: dict[str, float]) -> dict[str, float]:
        for task, q in value.items():
            if not 0 <= q <= 1:
                raise ValueError(f"quality for task '{task}' must be in [0, 1], got {q}")
        return value

    @property
    def arm(self) -> str:
        return f"{self.name}::{self.model}"


class PresetConfig(_Strict):
    strategy: Literal["cost", "quality", "latency", "balanced", "task", "learned"] | None = None
    weights: WeightsConfig | None = None
    quality_threshold: float | None = Field(default=None, ge=0, le=1)


class RoutingConfig(_Strict):
    strategy: Literal["cost", "quality", "latency", "balanced", "task", "learned"] = "balanced"
    fallback_strategy: Literal["cost", "quality", "latency", "balanced", "task"] = "balanced"
    quality_threshold: float = Field(default=0.8, ge=0, le=1)
    balanced_weights: BalancedWeights = Field(default_factory=BalancedWeights)
    weights: WeightsConfig = Field(default_factory=lambda: WeightsConfig(quality=1.0, cost=0.05, latency=0.05))
    availability_threshold: float = Field(default=0.95, ge=0, le=1)
    availability_min_calls: int = Field(default=10, ge=0)
    availability_half_life_s: float = Field(default=30.0, gt=0)
    ewma_alpha: float = Field(default=0.1, gt=0, le=1)
    task_preferences: dict[str, list[str]] = Field(default_factory=dict)
    presets: dict[str, PresetConfig] = Field(default_factory=dict)
    model_path: str | None = None
    tracking_uri: str | None = None
    exploration: bool = True
    # Rule strategies only: share of requests whose first arm is drawn uniformly (logged with exact
    # propensities, so that training can evaluate other policies on the traffic). 0 = pure rules.
    exploration_epsilon: float = Field(default=0.0, ge=0, le=1)
    seed: int | None = None


class BreakerConfig(_Strict):
    failure_threshold: int = Field(default=5, ge=1)
    reset_timeout_s: float = Field(default=60.0, gt=0)


class FailoverConfig(_Strict):
    attempt_timeout_s: float = Field(default=30.0, gt=0)
    deadline_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=4, ge=1)


class BudgetsConfig(_Strict):
    window: Literal["day", "month"] = "day"
    providers: dict[str, float] = Field(default_factory=dict)
    tenants: dict[str, float] = Field(default_factory=dict)

    @field_validator("providers", "tenants")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for name, limit in value.items():
            if limit < 0:
                raise ValueError(f"limit for '{name}' must be >= 0, got {limit}")
        return value


class TenantConfig(_Strict):
    keys_sha256: list[str] = Field(default_factory=list)
    weights: WeightsConfig | None = None
    region: str | None = None

    @field_validator("keys_sha256")
    @classmethod
    def _hex(cls, value: list[str]) -> list[str]:
        for key in value:
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key.lower()):
                raise ValueError("each entry must be the hex sha256 of a gateway key (64 characters)")
        return [k.lower() for k in value]


class VariantConfig(_Strict):
    name: str = Field(min_length=1)
    weight: float = Field(gt=0)
    strategy: Literal["cost", "quality", "latency", "balanced", "task", "learned"]
    model_path: str | None = None


class ExperimentConfig(_Strict):
    name: str = Field(min_length=1)
    unit: Literal["session", "tenant", "request"] = "session"
    variants: list[VariantConfig] = Field(min_length=2)
    enabled: bool = True


class LogConfig(_Strict):
    path: str | None = None
    store_prompts: bool = False
    store_embeddings: bool = True
    # Embed every request so the log can train a contextual policy even while rule strategies route
    # (costs one embedding per request; the learned and task strategies embed anyway).
    embed_for_log: bool = False
    queue_size: int = Field(default=10_000, ge=1)


class JudgeConfig(_Strict):
    provider: str = Field(min_length=1)
    sample_rate: float = Field(default=0.1, ge=0, le=1)
    timeout_s: float = Field(default=30.0, gt=0)
    max_workers: int = Field(default=2, ge=1)


class ScoringConfig(_Strict):
    """Automatic quality signals and how the reward combines them with user feedback."""

    heuristics: bool = True
    judge: JudgeConfig | None = None
    weights: dict[Literal["user", "judge", "heuristic"], float] = Field(
        default_factory=lambda: {"user": 1.0, "judge": 0.7, "heuristic": 0.3})


class StateConfig(_Strict):
    """Where budget balances and breaker states live: in this process, or in Redis to share them."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "learned-router:"


class EmbedderConfig(_Strict):
    kind: Literal["minilm", "static", "hashing"] = "minilm"
    dim: int = Field(default=384, gt=0)
    cache_size: int = Field(default=4096, ge=0)


class RouterConfig(_Strict):
    providers: list[ProviderConfig] = Field(min_length=1)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    failover: FailoverConfig = Field(default_factory=FailoverConfig)
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    experiments: list[ExperimentConfig] = Field(default_factory=list)
    log: LogConfig = Field(default_factory=LogConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)

    def provider(self, name: str) -> ProviderConfig:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


def _loc(loc: tuple[Any, ...], data: Mapping[str, Any]) -> str:
    """Turn a pydantic location into a dotted key, naming list items by their ``name`` when they have one."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and item < len(node) and isinstance(
                node[item], Mapping) else None
            parts[-1] = f"{parts[-1]}[{item}]" + (f"({name})" if name else "") if parts else f"[{item}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, Mapping) else None
    return ".".join(parts)


def parse_config(data: Any, *, base_dir: Path | None = None) -> RouterConfig:
    """Validate a config mapping (phase 1 and 2). Raises ConfigError naming the key and the problem."""
    if not isinstance(data, Mapping):
        raise ConfigError("", f"the config must be a mapping at the top level, got {type(data).__name__}")
    try:
        cfg = RouterConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _loc(tuple(err["loc"]), data)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        raise ConfigError(key, msg) from None
    _resolve(cfg)
    if base_dir is not None:
        cfg = _relative_paths(cfg, base_dir)
    return cfg


def _resolve(cfg: RouterConfig) -> None:
    names = [p.name for p in cfg.providers]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"providers[{i}].name", f"duplicate provider name '{name}'")
        if "::" in name:
            raise ConfigError(f"providers[{i}].name", "must not contain '::'")
        seen.add(name)
    known = set(names)
    for task, prefs in cfg.routing.task_preferences.items():
        for j, ref in enumerate(prefs):
            if ref not in known:
                raise ConfigError(f"routing.task_preferences.{task}[{j}]", f"unknown provider '{ref}'")
    for ref in cfg.budgets.providers:
        if ref not in known:
            raise ConfigError(f"budgets.providers.{ref}", f"unknown provider '{ref}'")
    for ref in cfg.budgets.tenants:
        if cfg.tenants and ref not in cfg.tenants:
            raise ConfigError(f"budgets.tenants.{ref}", f"unknown tenant '{ref}'")
    seen_exp: set[str] = set()
    for i, exp in enumerate(cfg.experiments):
        if exp.name in seen_exp:
            raise ConfigError(f"experiments[{i}].name", f"duplicate experiment name '{exp.name}'")
        seen_exp.add(exp.name)
        vnames = [v.name for v in exp.variants]
        if len(set(vnames)) != len(vnames):
            raise ConfigError(f"experiments[{i}].variants", "variant names must be unique")
    if not any(p.route for p in cfg.providers):
        raise ConfigError("providers", "at least one provider must have route: true")
    if cfg.scoring.judge is not None and cfg.scoring.judge.provider not in known:
        raise ConfigError("scoring.judge.provider", f"unknown provider '{cfg.scoring.judge.provider}'")
    for name in cfg.routing.presets:
        if name in known or any(p.arm == name for p in cfg.providers):
            raise ConfigError(f"routing.presets.{name}", "a preset must not share its name with a provider")


def _relative_paths(cfg: RouterConfig, base_dir: Path) -> RouterConfig:
    def fix(path: str | None) -> str | None:
        # URLs (a model registry, a PostgreSQL decision log) are not paths relative to the config file.
        if path is None or path.startswith(("models:/", "postgresql://", "postgres://")) or \
                Path(path).is_absolute():
            return path
        return str((base_dir / path).resolve())

    routing = cfg.routing.model_copy(update={"model_path": fix(cfg.routing.model_path)})
    log = cfg.log.model_copy(update={"path": fix(cfg.log.path)})
    exps = [
        e.model_copy(update={"variants": [v.model_copy(update={"model_path": fix(v.model_path)}) for v in e.variants]})
        for e in cfg.experiments
    ]
    return cfg.model_copy(update={"routing": routing, "log": log, "experiments": exps})


def load_config(path: str | os.PathLike[str]) -> RouterConfig:
    """Read and validate a YAML config file. Relative paths inside are taken from the file's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{p} is not valid YAML: {exc}") from None
    return parse_config(data, base_dir=p.parent)


def resolve_secret(ref: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Read a secret reference (``env:NAME``). The only place the environment is read for secrets."""
    if ref is None:
        return None
    env = os.environ if environ is None else environ
    name = ref.removeprefix("env:")
    return env.get(name)
