"""Prometheus metrics of one model server, in a registry the server owns."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from core.modelcalls import ForwardStats
from services.model.cache import EvictionReason

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ModelMetrics:
    """Forwards, token counts, cache state, evictions, context misses, token masks, latency, queue depth."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.forwards = Counter("polyspec_model_forwards", "Model forward passes.", registry=r)
        self.computed_tokens = Counter(
            "polyspec_model_computed_tokens", "Tokens fed through the model.", registry=r
        )
        self.reused_tokens = Counter(
            "polyspec_model_reused_tokens", "Context tokens served from the KV cache.", registry=r
        )
        self.evictions = Counter(
            "polyspec_model_cache_evictions", "Sequences evicted from the KV cache.", ["reason"], registry=r
        )
        self.context_misses = Counter(
            "polyspec_model_context_misses",
            "Requests whose cached prefix was not held (FAILED_PRECONDITION).",
            registry=r,
        )
        self.token_mask_misses = Counter(
            "polyspec_model_token_mask_misses",
            "Draft requests naming a token mask the server does not hold (FAILED_PRECONDITION).",
            registry=r,
        )
        self.empty_drafts = Counter(
            "polyspec_model_empty_drafts",
            "Draft calls that proposed no token (a lookup drafter found no match; a mask left no mass).",
            registry=r,
        )
        self.token_masks = Gauge(
            "polyspec_model_token_masks", "Token masks registered with SetTokenMask and held.", registry=r
        )
        self.request_seconds = Histogram(
            "polyspec_model_request_seconds",
            "Latency of model-service calls, queueing included.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_bytes = Gauge("polyspec_model_cache_bytes", "Bytes of all cached keys/values.", registry=r)
        self.cache_sessions = Gauge("polyspec_model_cache_sessions", "Sequences with a KV cache.", registry=r)
        self.queue_depth = Gauge("polyspec_model_queue_depth", "Requests waiting or running.", registry=r)
        self.emulated_overruns = Counter(
            "polyspec_model_emulated_overruns",
            "BENCHMARKING: forwards whose real compute exceeded the emulated latency (no padding left).",
            registry=r,
        )
        self.cancelled_calls = Counter(
            "polyspec_model_cancelled_calls",
            "Draft/Score calls whose caller went away mid-call: stopped before their next forward.",
            registry=r,
        )
        self.emulated_forward_seconds = Gauge(
            "polyspec_model_emulated_forward_seconds",
            "BENCHMARKING FLAG: emulated per-forward latency in seconds (0 = off).",
            registry=r,
        )
        for reason in EvictionReason:
            self.evictions.labels(reason=reason.value)

    def observe(
        self,
        *,
        cache_bytes: Callable[[], float],
        cache_sessions: Callable[[], float],
        queue_depth: Callable[[], float],
        token_masks: Callable[[], float],
        emulated_forward_seconds: float,
    ) -> None:
        """Binds the gauges to live values of the engine and worker."""
        self.cache_bytes.set_function(cache_bytes)
        self.cache_sessions.set_function(cache_sessions)
        self.token_masks.set_function(token_masks)
        self.queue_depth.set_function(queue_depth)
        self.emulated_forward_seconds.set(emulated_forward_seconds)

    def record_stats(self, stats: ForwardStats) -> None:
        self.forwards.inc(stats.forwards)
        self.computed_tokens.inc(stats.computed_tokens)
        self.reused_tokens.inc(stats.reused_tokens)
        self.emulated_overruns.inc(stats.emulated_overruns)

    def record_cancelled(self, stats: ForwardStats) -> None:
        """A call stopped by its cancel signal, with the work it did."""
        self.cancelled_calls.inc()
        self.record_stats(stats)

    def record_draft(self, draft_tokens: int) -> None:
        if draft_tokens == 0:
            self.empty_drafts.inc()

    def record_eviction(self, sequence_id: str, reason: EvictionReason) -> None:
        del sequence_id
        self.evictions.labels(reason=reason.value).inc()

    @contextlib.contextmanager
    def timed(self, method: str) -> Iterator[None]:
        """Observes the wall time of one call (successful or not)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.request_seconds.labels(method=method).observe(time.perf_counter() - started)
