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
from coordinator.loop.masks import TokenMaskRegistry
from coordinator.loop.plan import RequestPlan
from coordinator.metrics import CoordinatorMetrics
from coordinator.pair import ModelEndpoint, ModelPair
from coordinator.replicas import ReplicaPool
from coordinator.request import GenerationParams

log = structlog.get_logger(__name__)

# Support entries (summed over a round's drafter steps) an SLRS round may enumerate before it is
# verified as SLEM instead; with the process of ``coordinator.verify.slrs`` the work is linear in them.
DEFAULT_SLRS_ENUMERATION_BUDGET = 1 << 14


@dataclass
class LoopServices:
    """What every request of one coordinator shares (owned by the server)."""

    settings: CoordinatorSettings
    pair: ModelPair
    targets: ReplicaPool
    drafters: ReplicaPool | None
    metrics: CoordinatorMetrics
    estimates: CostEstimates = field(default_factory=CostEstimates)
    token_masks: TokenMaskRegistry | None = None  # TLI's mask, for a pair with different vocabularies
    slrs_enumeration_budget: int = DEFAULT_SLRS_ENUMERATION_BUDGET
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
class DrafterView:
    """The drafter's own tokens after its prompt in a cross-vocabulary run.

    After every commit they are re-synced to the committed text (``coordinator.vocab.resync_drafter``):
    ``canonical bytes(generated) + pending == committed_text``, where ``committed_text`` is the canonical
    bytes of the target's output tokens and ``pending`` the end of it the drafter cannot see yet (an
    incomplete character). Tokens that agree are kept, so the drafter service crops its cache to the
    longest common prefix instead of rebuilding it.
    """

    generated: list[int] = field(default_factory=list)
    pending: bytes = b""
    committed_text: bytearray = field(default_factory=bytearray)


@dataclass
class RequestRun:
    """One request while it runs: its plan, both models' views of the sequence and its counters.

    The target sees its prompt ids followed by the output ids. A same-vocabulary drafter sees its prompt
    ids followed by the same output ids; a cross-vocabulary drafter its prompt ids followed by its own
    view of the output text (``view``).
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
    view: DrafterView | None = None  # cross-vocabulary algorithms only

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
        if plan.cross_vocabulary:
            run.view = DrafterView()
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
        generated = self.output if self.view is None else self.view.generated
        return [*self.plan.drafter_prompt, *generated]

    def drafter_lag(self) -> int:
        """Tokens of the drafter's context its next call sends: what its cache must catch up on (the
        whole context before the first call, or on a replica it has not called yet)."""
        context = self.drafter_context()
        drafters = self.services.drafters
        client = None if drafters is None else drafters.client(self.drafter_replica)
        return len(context) if client is None else client.uncached_tokens(self.drafter_sequence_id, context)

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
            lookahead=self.plan.lookahead_label,
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
            fallback_reason="; ".join(r for r in (self.plan.note, self.fallback_reason) if r),
            seed=self.plan.seed,
        )


def _reason_label(reason: str) -> str:
    """A low-cardinality metric label for a fallback reason."""
    lowered = reason.lower()
    for label in ("unavailable", "over capacity", "did not answer", "context window", "malformed"):
        if label in lowered:
            return label.replace(" ", "_")
    return "other"
