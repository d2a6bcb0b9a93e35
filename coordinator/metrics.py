"""The coordinator's Prometheus metrics, in a registry owned by one server (never the global one).

The speculative-decoding counters follow vLLM's ``spec_decode_*`` names: drafts (rounds that verified
draft tokens), draft tokens, accepted tokens, emitted tokens (accepted + recovered or bonus tokens of
those rounds). Latency: time to first token, inter-token latency (a round's gap spread over the tokens
it emitted) and per-hop model-service call latency. Cross-vocabulary pairs: the drafter -> target
intersection coverage (TLI), token mask registrations and SLRS rounds over their enumeration budget.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 64)


class CoordinatorMetrics:
    """Every coordinator metric, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.num_drafts = Counter(
            "polyspec_spec_decode_num_drafts", "Rounds that verified draft tokens.", registry=r
        )
        self.num_draft_tokens = Counter(
            "polyspec_spec_decode_num_draft_tokens", "Draft tokens sent for verification.", registry=r
        )
        self.num_accepted_tokens = Counter(
            "polyspec_spec_decode_num_accepted_tokens", "Draft tokens the target accepted.", registry=r
        )
        self.num_emitted_tokens = Counter(
            "polyspec_spec_decode_num_emitted_tokens",
            "Output tokens of speculative rounds (accepted plus recovered or bonus).",
            registry=r,
        )
        self.prompt_tokens = Counter("polyspec_prompt_tokens", "Prompt tokens (target view).", registry=r)
        self.generation_tokens = Counter("polyspec_generation_tokens", "Output tokens.", registry=r)
        self.rounds = Counter(
            "polyspec_rounds",
            "Generation rounds (under DSI: blocks verified and plain target steps applied).",
            ["algorithm", "scheduler"],
            registry=r,
        )
        self.requests = Counter(
            "polyspec_requests", "Finished requests.", ["algorithm", "finish_reason", "scheduler"], registry=r
        )
        self.verifications_preempted = Counter(
            "polyspec_verifications_preempted",
            "DSI verifications cancelled or whose result was discarded (a rejection before them or a stale "
            "prefix).",
            registry=r,
        )
        self.target_tokens_computed = Counter(
            "polyspec_target_tokens_computed",
            "Tokens fed through target forwards, discarded work included (per output token: the target "
            "compute a scheduler spends).",
            ["scheduler"],
            registry=r,
        )
        self.call_queue_seconds = Histogram(
            "polyspec_call_queue_seconds",
            "Time a DSI verification waited for a free target replica before it was sent.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_failures = Counter(
            "polyspec_request_failures", "Requests that ended with an error.", ["code"], registry=r
        )
        self.fallbacks = Counter(
            "polyspec_fallbacks", "Requests that fell back to target-only decoding.", ["reason"], registry=r
        )
        self.replica_events = Counter(
            "polyspec_replica_events",
            "Replica health events: a call timed out, was re-sent to another replica, or waited for a "
            "free slot; a replica was ejected or reinstated by a probe.",
            ["role", "event"],
            registry=r,
        )
        self.requests_in_flight = Gauge("polyspec_requests_in_flight", "Requests running.", registry=r)
        self.admission_running = Gauge(
            "polyspec_admission_running_requests", "Requests holding an admission slot.", registry=r
        )
        self.admission_queued = Gauge(
            "polyspec_admission_queued_requests", "Requests waiting for an admission slot.", registry=r
        )
        self.admission_refusals = Counter(
            "polyspec_admission_refusals",
            "Requests refused at admission (RESOURCE_EXHAUSTED: every slot and queue place taken).",
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "polyspec_time_to_first_token_seconds",
            "From request start to the first output token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "polyspec_inter_token_latency_seconds",
            "Gap between output tokens (a round's gap divided by the tokens it emitted).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "polyspec_request_duration_seconds", "Whole requests.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.model_call_seconds = Histogram(
            "polyspec_model_call_seconds",
            "Model-service calls as seen by the coordinator (per hop).",
            ["role", "method", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lookahead_tokens = Histogram(
            "polyspec_lookahead_draft_tokens",
            "Draft tokens asked for per speculative round (lookahead decisions).",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )

        self.vocab_intersection_coverage = Gauge(
            "polyspec_coordinator_vocab_intersection_coverage",
            "Fraction of the drafter's tokens whose bytes the target's vocabulary holds (1 = same).",
            registry=r,
        )
        self.token_mask_registrations = Counter(
            "polyspec_token_mask_registrations",
            "SetTokenMask calls (TLI's intersection sent to a drafter replica).",
            ["outcome"],
            registry=r,
        )
        self.slrs_over_budget_rounds = Counter(
            "polyspec_slrs_over_budget_rounds",
            "SLRS rounds over their enumeration budget (verified as SLEM).",
            registry=r,
        )

    def observe_call(self, role: str, method: str, seconds: float, ok: bool) -> None:
        """A finished model-service call (a ``coordinator.clients.CallObserver``)."""
        outcome = "ok" if ok else "error"
        self.model_call_seconds.labels(role=role, method=method, outcome=outcome).observe(seconds)

    def observe_replica_event(self, role: str, event: str) -> None:
        self.replica_events.labels(role=role, event=event).inc()

    def observe_tokens(self, gap_seconds: float, count: int, *, first: bool) -> None:
        """``count`` output tokens emitted ``gap_seconds`` after the previous ones (or the request start)."""
        if count <= 0:
            return
        self.generation_tokens.inc(count)
        if first:
            self.time_to_first_token.observe(gap_seconds)
            rest, per_token = count - 1, 0.0  # the rest arrived with the first one
        else:
            rest, per_token = count, gap_seconds / count
        for _ in range(rest):
            self.inter_token_latency.observe(per_token)
