"""``Router`` and ``AsyncRouter``: orchestration only. Planning (features → eligibility → strategy) is shared
and pure of I/O; the sync and async classes differ only in how they call providers.

    >>> router = Router.from_config("router.yaml")
    >>> decision = router.route({"messages": [{"role": "user", "content": "Hi"}]})
    >>> completion = router.complete({"messages": [{"role": "user", "content": "Hi"}]})
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from learned_router.analytics import Analytics
from learned_router.breaker import CircuitBreaker
from learned_router.budget import BudgetLedger
from learned_router.config import RouterConfig, load_config
from learned_router.errors import ProviderError, RouterError
from learned_router.failover import FailoverRun
from learned_router.planning import Planner, build_planner
from learned_router.protocols import Clock, SystemClock
from learned_router.scoring import HeuristicScorer, JudgeScorer, Signal
from learned_router.stats import LiveStats
from learned_router.strategies.base import Features
from learned_router.types import (
    ArmId,
    ChatRequest,
    Completion,
    Decision,
    Outcome,
    split_arm,
)

if TYPE_CHECKING:
    from learned_router.streaming import AsyncRoutedStream, RoutedStream

__all__ = ["AsyncRouter", "Router"]

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """What ``feedback`` needs to credit a served request later."""

    arm: ArmId
    features: Features
    cost_usd: float
    latency_s: float
    tenant: str | None


class Router:
    """Routes requests over the configured providers.

    Args:
        config: a validated RouterConfig.
        clients: provider name → ProviderClient (see ``providers``).
        planner: turns a request into a Decision (features, eligibility, policy).
        clock: injected time source.
        log: an optional decision log with ``append(record)`` and ``add_feedback(...)``.
    """

    def __init__(self, config: RouterConfig, *, clients: Mapping[str, Any], planner: Planner,
                 clock: Clock | None = None, log: Any = None, heuristics: HeuristicScorer | None = None,
                 judge: JudgeScorer | None = None, max_pending: int = 100_000) -> None:
        self.config = config
        self.clients = dict(clients)
        self.planner = planner
        self.clock = clock or planner.clock
        self.log = log
        self.heuristics = heuristics
        self.judge = judge
        self.max_pending = max_pending
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._pending_lock = threading.Lock()

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, source: str | Path | RouterConfig | Mapping[str, Any], *, clock: Clock | None = None,
                    seed: int | None = None, environ: Mapping[str, str] | None = None, http: Any = None,
                    ahttp: Any = None, log: Any = None, embedder: Any = None) -> Router:
        """Build a router from a YAML path, a mapping or a RouterConfig. Does no network I/O."""
        from learned_router.config import parse_config
        from learned_router.providers import build_clients

        if isinstance(source, RouterConfig):
            cfg = source
        elif isinstance(source, Mapping):
            cfg = parse_config(source)
        else:
            cfg = load_config(source)
        clock = clock or SystemClock()
        planner = build_planner(cfg, clock=clock, seed=seed, embedder=embedder)
        clients = build_clients(cfg, environ=environ, http=http, ahttp=ahttp)
        if log is False:  # explicitly no decision log (e.g. a dry run)
            log = None
        elif log is None and cfg.log.path:
            from learned_router.stores import open_log

            log = open_log(cfg.log)
        judge = None
        if cfg.scoring.judge is not None:
            j = cfg.scoring.judge
            judge = JudgeScorer(clients[j.provider], sample_rate=j.sample_rate, timeout_s=j.timeout_s,
                                max_workers=j.max_workers, rng=np.random.default_rng(seed))
        heuristics = HeuristicScorer() if cfg.scoring.heuristics else None
        return cls(cfg, clients=clients, planner=planner, clock=clock, log=log, heuristics=heuristics, judge=judge)

    # -- shortcuts to the planner's state ----------------------------------------------------------------
    @property
    def breaker(self) -> CircuitBreaker:
        return self.planner.breaker

    @property
    def budget(self) -> BudgetLedger:
        return self.planner.budget

    @property
    def stats(self) -> LiveStats:
        return self.planner.stats

    @property
    def analytics(self) -> Analytics:
        return self.planner.analytics

    # -- the API ------------------------------------------------------------------------------------------
    def route(self, request: ChatRequest | Mapping[str, Any]) -> Decision:
        """Decide where ``request`` would go, without calling any provider.

        Raises:
            RequestError: the request is malformed.
            NoEligibleArmError: every provider is excluded (the error lists each reason).
            BudgetExceededError: the tenant is over its cap.
        """
        return self.planner.plan(ChatRequest.coerce(request))[0]

    def complete(self, request: ChatRequest | Mapping[str, Any]) -> Completion:
        """Route and call, failing over down the ranking.

        Raises:
            AllAttemptsFailedError: every attempt failed; ``attempts`` lists them.
            and what ``route`` raises.
        """
        req = ChatRequest.coerce(request)
        decision, features = self._plan_or_log(req)
        run = self._run(decision, req)
        try:
            for arm in run.candidates():
                client = self.clients[split_arm(arm)[0]]
                try:
                    reply = client.complete(req, timeout_s=run.attempt_timeout_s())
                except ProviderError as err:
                    if not run.failed(err):
                        break
                    continue
                return self._served(run, features, reply.text, reply.finish_reason, reply.input_tokens,
                                    reply.output_tokens, client)
        except BaseException:
            run.abandon()
            raise
        raise self._exhausted(run, features)

    def stream(self, request: ChatRequest | Mapping[str, Any]) -> RoutedStream:
        """Route and stream: iterate the result for StreamChunks. Failover happens only before the first
        chunk; an error after it is raised from the iterator as a ProviderError (the answer is incomplete)
        and logged as such. ``result.completion`` is set when the stream ended normally."""
        from learned_router.streaming import RoutedStream

        req = ChatRequest.coerce(request)
        decision, features = self._plan_or_log(req)
        return RoutedStream(self, req, decision, features)

    def feedback(self, request_id: str, quality: float, *, source: str = "user", tenant: str | None = None) -> bool:
        """Credit a served request with a quality in [0, 1]. Returns False for an unknown request id (or one
        of another tenant). Updates live quality, the learned policy, and the log."""
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        with self._pending_lock:
            pending = self._pending.get(request_id)
        if pending is None or (tenant is not None and pending.tenant != tenant):
            if self.log is not None and hasattr(self.log, "add_feedback"):
                return bool(self.log.add_feedback(request_id, quality, source=source, tenant=tenant))
            return False
        self.planner.learn(pending.arm, pending.features, quality, cost_usd=pending.cost_usd,
                           latency_s=pending.latency_s, weight=self.config.scoring.weights.get(source, 1.0))
        if self.log is not None and hasattr(self.log, "add_feedback"):
            self.log.add_feedback(request_id, quality, source=source, tenant=tenant)
        return True

    def report(self) -> dict[str, Any]:
        """Per-provider analytics of this router's traffic so far (JSON-safe)."""
        states = {arm: self.breaker.state(arm) for arm in self.stats.arms()}
        out = self.analytics.report(states)
        out["budgets"] = self.budget.usage()
        return out

    def close(self) -> None:
        if self.judge is not None:
            self.judge.close()
        for client in self.clients.values():
            client.close()
        if self.log is not None:
            self.log.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals shared with AsyncRouter and RoutedStream ----------------------------------------------
    def _plan_or_log(self, req: ChatRequest) -> tuple[Decision, Features]:
        try:
            return self.planner.plan(req)
        except RouterError as err:
            self._log_refusal(req, err)
            raise

    def _run(self, decision: Decision, req: ChatRequest) -> FailoverRun:
        return FailoverRun(
            decision=decision, request=req, providers=self.planner.by_arm, breaker=self.breaker,
            budget=self.budget, stats=self.stats, analytics=self.analytics, policy=self.config.failover,
            clock=self.clock, est_cost=decision.est_cost_usd,
        )

    def _served(self, run: FailoverRun, features: Features, text: str, finish_reason: str | None,
                input_tokens: int, output_tokens: int, client: Any) -> Completion:
        cost = client.cost_usd(input_tokens, output_tokens)
        arm, latency, ttft = run.succeeded(cost, input_tokens, output_tokens)
        signal = self.heuristics.score(run.request, text, finish_reason) if self.heuristics else None
        outcome = Outcome(request_id=run.request.request_id, attempts=tuple(run.attempts), served_arm=arm,
                          input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost,
                          latency_s=run.clock.monotonic() - run.started, ttft_s=ttft,
                          quality=signal.quality if signal else None, quality_source=signal.source if signal else None)
        self._finish(run, features, outcome)
        if signal is not None:
            self.planner.learn(arm, features, signal.quality, cost_usd=cost, latency_s=latency,
                               weight=self.config.scoring.weights.get(signal.source, 1.0))
        if self.judge is not None:
            self.judge.maybe_grade(run.request, text, self._on_signal)
        provider, model = split_arm(arm)
        return Completion(request_id=run.request.request_id, provider=provider, model=model, text=text,
                          finish_reason=finish_reason, input_tokens=input_tokens, output_tokens=output_tokens,
                          cost_usd=cost, latency_s=latency, decision=run.decision, outcome=outcome, ttft_s=ttft)

    def _exhausted(self, run: FailoverRun, features: Features) -> RouterError:
        kinds = [a.error_kind for a in run.attempts if a.status == "error"]
        outcome = Outcome(request_id=run.request.request_id, attempts=tuple(run.attempts), served_arm=None,
                          latency_s=run.clock.monotonic() - run.started,
                          error_kind=kinds[-1] if kinds else "no_attempt")
        self._finish(run, features, outcome)
        return run.error()

    def _finish(self, run: FailoverRun, features: Features, outcome: Outcome) -> None:
        decision = run.decision
        self.analytics.record_request(ok=outcome.served_arm is not None,
                                      first_arm=decision.ranking[0] if decision.ranking else None,
                                      served_arm=outcome.served_arm)
        if outcome.served_arm is not None:
            with self._pending_lock:
                self._pending[decision.request_id] = _Pending(
                    outcome.served_arm, features, outcome.cost_usd, outcome.latency_s, run.request.tenant)
                while len(self._pending) > self.max_pending:
                    self._pending.popitem(last=False)
        if log.isEnabledFor(logging.INFO):
            log.info("request %s served_by=%s latency_ms=%.1f cost_usd=%.6f fallbacks=%d", decision.request_id,
                     outcome.served_arm, outcome.latency_s * 1000, outcome.cost_usd,
                     max(0, len([a for a in outcome.attempts if a.status != "skipped"]) - 1))
        if self.log is not None:
            self.log.append_decision(decision, outcome, features=features, request=run.request,
                                     breaker_trips=run.trips)

    def _on_signal(self, request_id: str, signal: Signal) -> None:
        self.feedback(request_id, signal.quality, source=signal.source)

    def _log_refusal(self, req: ChatRequest, err: RouterError) -> None:
        if self.log is not None and hasattr(self.log, "append_refusal"):
            self.log.append_refusal(req, err)


class AsyncRouter(Router):
    """The same router with coroutine methods: ``await router.complete(...)``; ``route`` stays sync-cheap
    but is offered as a coroutine too for symmetry."""

    async def route(self, request: ChatRequest | Mapping[str, Any]) -> Decision:  # type: ignore[override]
        return Router.route(self, request)

    async def _aplan(self, req: ChatRequest) -> tuple[Decision, Features]:
        """Plan off the event loop when planning embeds the prompt (milliseconds of CPU); inline otherwise."""
        if self.planner.features is None:
            return self._plan_or_log(req)
        import anyio

        return await anyio.to_thread.run_sync(self._plan_or_log, req)

    async def complete(self, request: ChatRequest | Mapping[str, Any]) -> Completion:  # type: ignore[override]
        req = ChatRequest.coerce(request)
        decision, features = await self._aplan(req)
        run = self._run(decision, req)
        try:
            for arm in run.candidates():
                client = self.clients[split_arm(arm)[0]]
                try:
                    reply = await client.acomplete(req, timeout_s=run.attempt_timeout_s())
                except ProviderError as err:
                    if not run.failed(err):
                        break
                    continue
                return self._served(run, features, reply.text, reply.finish_reason, reply.input_tokens,
                                    reply.output_tokens, client)
        except BaseException:
            run.abandon()
            raise
        raise self._exhausted(run, features)

    async def feedback(self, request_id: str, quality: float, *, source: str = "user",  # type: ignore[override]
                       tenant: str | None = None) -> bool:
        return Router.feedback(self, request_id, quality, source=source, tenant=tenant)

    def stream(self, request: ChatRequest | Mapping[str, Any]) -> AsyncRoutedStream:  # type: ignore[override]
        """Like ``Router.stream``, iterated with ``async for`` (plans on the calling thread; ``astream``
        plans off the event loop)."""
        from learned_router.streaming import AsyncRoutedStream

        req = ChatRequest.coerce(request)
        decision, features = self._plan_or_log(req)
        return AsyncRoutedStream(self, req, decision, features)

    async def astream(self, request: ChatRequest | Mapping[str, Any]) -> AsyncRoutedStream:
        """Plan (off the event loop when it embeds), then return the stream to iterate with ``async for``."""
        from learned_router.streaming import AsyncRoutedStream

        req = ChatRequest.coerce(request)
        decision, features = await self._aplan(req)
        return AsyncRoutedStream(self, req, decision, features)

    async def aclose(self) -> None:
        if self.judge is not None:
            self.judge.close()
        for client in self.clients.values():
            await client.aclose()
        if self.log is not None:
            self.log.close()
