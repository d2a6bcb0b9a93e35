"""The services a loop runs against, and the mutable state of one running request."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import structlog

from coordinator.clients import CallScope, Deadline, Traffic
from coordinator.config import CoordinatorSettings
from coordinator.lookahead import CostEstimates
from coordinator.loop.events import RequestStats
from coordinator.loop.plan import RequestPlan
from coordinator.metrics import CoordinatorMetrics
from coordinator.pair import ModelEndpoint, ModelPair
from coordinator.replicas import ReplicaPool
from coordinator.validation import AlgorithmName, GenerationParams

log = structlog.get_logger(__name__)


@dataclass
class LoopServices:
    """What every request of one coordinator shares (owned by the server)."""

    settings: CoordinatorSettings
    pair: ModelPair
    targets: ReplicaPool
    drafters: ReplicaPool | None
    metrics: CoordinatorMetrics
    estimates: CostEstimates = field(default_factory=CostEstimates)
    # Release calls still running after their request was cancelled (kept alive until they finish).
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def keep_alive(self, task: asyncio.Task[None]) -> None:
        self.background.add(task)
        task.add_done_callback(self.background.discard)


@dataclass
class RoundCounters:
    """Work done so far by one request."""

    rounds: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    target_forwards: int = 0
    drafter_forwards: int = 0
    emulated_latency: bool = False


@dataclass
class RequestRun:
    """One request while it runs: its plan, both models' views of the sequence and its counters.

    Each model sees its own prompt ids followed by the shared output ids (target ids; drafting runs
    only for drafters with the target's tokenizer).
    """

    services: LoopServices
    params: GenerationParams
    plan: RequestPlan
    scope: CallScope
    target_sequence_id: str
    drafter_sequence_id: str
    output: list[int] = field(default_factory=list)
    counters: RoundCounters = field(default_factory=RoundCounters)
    fallback_reason: str = ""
    target_replica: str | None = None  # the replica that served the last call (cache affinity)
    drafter_replica: str | None = None
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float = 0.0

    @classmethod
    def start(
        cls, services: LoopServices, params: GenerationParams, plan: RequestPlan, deadline: Deadline
    ) -> RequestRun:
        nonce = uuid.uuid4().hex[:12]
        scope = CallScope(deadline, Traffic(), services.settings.call_timeout_seconds)
        run = cls(
            services,
            params,
            plan,
            scope,
            target_sequence_id=f"{params.request_id}/{nonce}/target",
            drafter_sequence_id=f"{params.request_id}/{nonce}/drafter",
            fallback_reason=plan.fallback_reason,
        )
        run.counters.emulated_latency = services.pair.emulated_latency
        return run

    @property
    def target(self) -> ModelEndpoint:
        return self.services.pair.target

    @property
    def drafting(self) -> bool:
        """Whether rounds still draft (a speculative plan that has not fallen back)."""
        return self.plan.drafter_prompt is not None and not self.fallback_reason

    def target_context(self) -> list[int]:
        return [*self.plan.target_prompt, *self.output]

    def drafter_context(self) -> list[int]:
        assert self.plan.drafter_prompt is not None
        return [*self.plan.drafter_prompt, *self.output]

    def fall_back(self, reason: str) -> None:
        """Stops drafting for the rest of the request (target-only decoding stays lossless)."""
        if not self.fallback_reason:
            self.fallback_reason = f"{reason}; target-only decoding from round {self.counters.rounds}"
            self.services.metrics.fallbacks.labels(reason=_reason_label(reason)).inc()
            log.warning("drafter_fallback", request_id=self.params.request_id, reason=self.fallback_reason)

    def stats(self) -> RequestStats:
        now = time.monotonic()
        counters = self.counters
        return RequestStats(
            algorithm=self.plan.algorithm,
            lookahead=self.plan.lookahead_label if self.plan.algorithm is AlgorithmName.SD else "none",
            prompt_tokens=len(self.plan.target_prompt),
            output_tokens=len(self.output),
            draft_tokens=counters.draft_tokens,
            accepted_tokens=counters.accepted_tokens,
            target_forwards=counters.target_forwards,
            drafter_forwards=counters.drafter_forwards,
            rounds=counters.rounds,
            time_to_first_token_seconds=(self.first_token_at or now) - self.started,
            total_seconds=now - self.started,
            bytes_sent=self.scope.traffic.bytes_sent,
            bytes_received=self.scope.traffic.bytes_received,
            emulated_latency=counters.emulated_latency,
            fallback_reason=self.fallback_reason,
            seed=self.plan.seed,
        )


def _reason_label(reason: str) -> str:
    """A low-cardinality metric label for a fallback reason."""
    lowered = reason.lower()
    for label in ("unavailable", "over capacity", "did not answer", "context window", "malformed"):
        if label in lowered:
            return label.replace(" ", "_")
    return "other"
