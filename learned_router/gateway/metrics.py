"""Prometheus metrics of one gateway app, in its own ``CollectorRegistry`` (no global registry, so several
apps can live in one process, e.g. in tests).

Exported (all prefixed ``learned_router_``):

==========================================  =========  ==================================================
name                                        type       labels / meaning
==========================================  =========  ==================================================
http_requests_total                         counter    route, status
request_duration_seconds                    histogram  stream: whole chat request as the gateway saw it
routing_overhead_seconds                    histogram  stream: gateway time outside provider calls
upstream_attempts_total                     counter    provider, status (ok, error, skipped)
provider_errors_total                       counter    provider, kind (timeout, unavailable, ...)
request_errors_total                        counter    type, code: error answers sent to clients
stream_interruptions_total                  counter    provider: streams cut after the first byte
cost_usd_total                              counter    provider
tokens_total                                counter    provider, direction (input, output)
decisions_total                             counter    strategy: decisions of served requests
exploratory_decisions_total                 counter    strategy: chosen arm had propensity < 1
exploration_rate                            gauge      exploratory / all decisions so far
feedback_total                              counter    result (accepted, not_found)
in_flight_requests                          gauge      chat requests being served
breaker_state                               gauge      arm, state: 1 for the arm's current state
budget_used_usd / budget_limit_usd          gauge      scope (provider, tenant), name
==========================================  =========  ==================================================

Breaker, budget and exploration values are read from the router when scraped, so they are never stale.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from learned_router.types import Attempt, Completion, Decision, split_arm

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_NS = "learned_router"
_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
_BREAKER_STATES = ("closed", "half_open", "open")


class _RouterState:
    """Custom collector: values read from the router at scrape time."""

    def __init__(self, router: Any, metrics: GatewayMetrics) -> None:
        self._router = router
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        breaker = GaugeMetricFamily(f"{_NS}_breaker_state", "Circuit breaker state per arm (1 = current state).",
                                    labels=["arm", "state"])
        for p in self._router.config.providers:
            current = self._router.breaker.state(p.arm)
            for state in _BREAKER_STATES:
                breaker.add_metric([p.arm, state], 1.0 if current == state else 0.0)
        yield breaker
        used = GaugeMetricFamily(f"{_NS}_budget_used_usd", "Spent or reserved in the current budget window.",
                                 labels=["scope", "name"])
        limit = GaugeMetricFamily(f"{_NS}_budget_limit_usd", "Budget cap per window.", labels=["scope", "name"])
        for key, row in self._router.budget.usage().items():
            scope, _, name = key.partition(":")
            used.add_metric([scope, name], float(row["used_usd"]))
            limit.add_metric([scope, name], float(row["limit_usd"]))
        yield used
        yield limit
        rate = GaugeMetricFamily(f"{_NS}_exploration_rate",
                                 "Share of decisions whose chosen arm had a propensity below 1.")
        rate.add_metric([], self._metrics.exploration_rate())
        yield rate

    def describe(self) -> Iterable[Metric]:
        return []


class GatewayMetrics:
    """All metrics of one app. Thread-safe (prometheus-client children are)."""

    def __init__(self, router: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(f"{_NS}_http_requests", "HTTP requests by route and status.",
                                     ["route", "status"], registry=r)
        self.duration = Histogram(f"{_NS}_request_duration_seconds", "Chat request latency seen by the gateway.",
                                  ["stream"], buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram(f"{_NS}_routing_overhead_seconds",
                                  "Gateway time outside provider calls (routing, parsing, encoding).",
                                  ["stream"], buckets=_OVERHEAD_BUCKETS, registry=r)
        self.attempts = Counter(f"{_NS}_upstream_attempts", "Provider attempts by outcome.",
                                ["provider", "status"], registry=r)
        self.provider_errors = Counter(f"{_NS}_provider_errors", "Failed provider attempts by kind.",
                                       ["provider", "kind"], registry=r)
        self.request_errors = Counter(f"{_NS}_request_errors", "Error answers sent to clients.",
                                      ["type", "code"], registry=r)
        self.interruptions = Counter(f"{_NS}_stream_interruptions", "Streams that failed after the first byte.",
                                     ["provider"], registry=r)
        self.cost = Counter(f"{_NS}_cost_usd", "Cost of served requests in USD.", ["provider"], registry=r)
        self.tokens = Counter(f"{_NS}_tokens", "Tokens of served requests.", ["provider", "direction"], registry=r)
        self.decisions = Counter(f"{_NS}_decisions", "Routing decisions.", ["strategy"], registry=r)
        self.exploratory = Counter(f"{_NS}_exploratory_decisions",
                                   "Decisions whose chosen arm had a propensity below 1.", ["strategy"], registry=r)
        self.feedback = Counter(f"{_NS}_feedback", "Feedback posts by result.", ["result"], registry=r)
        self.in_flight = Gauge(f"{_NS}_in_flight_requests", "Chat requests being served.", registry=r)
        self._lock = threading.Lock()
        self._n_decisions = 0
        self._n_exploratory = 0
        # Label children looked up once per label set: ``labels()`` builds a key and takes a lock each time.
        self._children: dict[tuple[Any, ...], Any] = {}
        r.register(_RouterState(router, self))

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- recording ----------------------------------------------------------------------------------------
    def http(self, route: str, status: int) -> None:
        self._child(self.http_requests, route, str(status)).inc()

    def error(self, kind: str, code: str | None) -> None:
        self._child(self.request_errors, kind, code or "").inc()

    def decision(self, decision: Decision) -> None:
        exploratory = decision.propensities.get(decision.arm, 1.0) < 1.0 - 1e-9
        with self._lock:
            self._n_decisions += 1
            self._n_exploratory += exploratory
        self._child(self.decisions, decision.strategy).inc()
        if exploratory:
            self._child(self.exploratory, decision.strategy).inc()

    def exploration_rate(self) -> float:
        with self._lock:
            return self._n_exploratory / self._n_decisions if self._n_decisions else 0.0

    def attempts_seen(self, attempts: Sequence[Attempt]) -> float:
        """Count attempts by outcome and failed ones by kind; returns the time spent in provider calls."""
        spent = 0.0
        for a in attempts:
            provider = split_arm(a.arm)[0]
            self._child(self.attempts, provider, a.status).inc()
            if a.status == "error":
                self._child(self.provider_errors, provider, a.error_kind or "error").inc()
            spent += a.latency_s
        return spent

    def served(self, c: Completion, *, total_s: float, stream: bool) -> None:
        """Record a served completion. The overhead is ``total_s`` minus the time spent in provider attempts
        (for a stream, the served attempt lasts until its last chunk)."""
        label = "true" if stream else "false"
        self.decision(c.decision)
        spent = self.attempts_seen(c.outcome.attempts)
        self._child(self.duration, label).observe(total_s)
        self._child(self.overhead, label).observe(max(0.0, total_s - spent))
        provider = c.provider
        self._child(self.cost, provider).inc(c.cost_usd)
        self._child(self.tokens, provider, "input").inc(c.input_tokens)
        self._child(self.tokens, provider, "output").inc(c.output_tokens)

    def failed(self, attempts: Sequence[Attempt], *, total_s: float, stream: bool) -> None:
        self.attempts_seen(attempts)
        self._child(self.duration, "true" if stream else "false").observe(total_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
