"""The services a loop runs against, one request's link to them, and the mutable state of a running request.

``RequestRun`` is what the runner changes as rounds finish; ``RequestRun.snapshot`` freezes it for a round
(``coordinator.loop.snapshot``). ``ServiceCalls`` makes a round's two model-service calls for one request:
replica choice with cache affinity, TLI's token mask, and drafting failures turned into
``DrafterFailedError`` (the round becomes a plain target step; the request's own deadline still fails it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field

import structlog

from coordinator.admission import AdmissionGate
from coordinator.callcost import CallWork
from coordinator.clients import CallScope, Deadline, ModelServiceClient, Traffic
from coordinator.config import CoordinatorSettings
from coordinator.dsi.policy import DsiPolicy
from coordinator.lookahead import CostEstimates, LookupChooser
from coordinator.loop.classifiers import StopClassifierRegistry
from coordinator.loop.masks import TokenMaskRegistry
from coordinator.loop.plan import RequestPlan
from coordinator.loop.round import DrafterFailedError
from coordinator.loop.snapshot import DrafterView, RequestFrame, RoundSnapshot
from coordinator.metrics import CoordinatorMetrics
from coordinator.pair import ModelEndpoint, ModelPair
from coordinator.replicas import ReplicaPool
from coordinator.request import AlgorithmName, GenerationParams, RequestStats, SchedulerName
from core.errors import DeadlineExceededError, PolyspecError
from core.modelcalls import DraftCall, DraftOutcome, ScoreCall, ScoreOutcome

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
    admission: AdmissionGate  # the cap on concurrent requests and their wait queue (the servicer holds it)
    estimates: CostEstimates = field(default_factory=CostEstimates)
    lookups: ReplicaPool | None = None  # a model-free drafter asked first every round (same vocabulary)
    lookup_max_draft_tokens: int = 16  # the lookup drafter's per-call limit (its Info)
    token_masks: TokenMaskRegistry | None = None  # TLI's mask, for a pair with different vocabularies
    stop_classifiers: StopClassifierRegistry | None = None  # DISCO's classifier, when one is loaded
    slrs_enumeration_budget: int = DEFAULT_SLRS_ENUMERATION_BUDGET
    dsi_policy: DsiPolicy = field(default_factory=DsiPolicy)  # which scheduler a request runs
    # Where prompts are tokenized and templated (a small pool the server owns); None: the loop's default.
    prompt_pool: Executor | None = None
    # Release calls still running after their request was cancelled (kept alive until they finish).
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def keep_alive(self, task: asyncio.Task[None]) -> None:
        self.background.add(task)
        task.add_done_callback(self.background.discard)


@dataclass
class CallTimes:
    """Sums over one request's answered model-service calls: the compute time the services reported and
    the wall time from send to reply as the coordinator saw it (a re-send to another replica included)."""

    drafter_compute_seconds: float = 0.0
    target_compute_seconds: float = 0.0
    drafter_call_seconds: float = 0.0
    target_call_seconds: float = 0.0

    def add_draft(self, started: float, compute_seconds: float) -> None:
        self.drafter_call_seconds += time.monotonic() - started
        self.drafter_compute_seconds += compute_seconds

    def add_score(self, started: float, compute_seconds: float) -> None:
        self.target_call_seconds += time.monotonic() - started
        self.target_compute_seconds += compute_seconds


class ServiceCalls:
    """The model-service calls of one request (a ``coordinator.loop.round.ModelCalls``)."""

    def __init__(self, services: LoopServices, scope: CallScope) -> None:
        self._services = services
        self._scope = scope
        self.times = CallTimes()
        self.target_replica: str | None = None  # the replica that served the last call (cache affinity)
        self.drafter_replica: str | None = None

    async def draft(self, call: DraftCall) -> DraftOutcome:
        """One Draft (restricted to TLI's mask when it names one); any failure but the request's own
        deadline raises ``DrafterFailedError``."""
        drafters = self._services.drafters
        assert drafters is not None
        masks = self._services.token_masks
        if call.token_mask_id and masks is None:
            raise DrafterFailedError("no token mask is set up for this pair")
        classifiers = self._services.stop_classifiers

        def send(client: ModelServiceClient, call: DraftCall, scope: CallScope) -> Awaitable[DraftOutcome]:
            if call.token_mask_id and masks is not None:
                return masks.draft(client, call, scope)
            return client.draft(call, scope)

        def invoke(client: ModelServiceClient, timeout: float) -> Awaitable[DraftOutcome]:
            scope = self._scope.with_timeout(timeout)
            if call.stop_classifier_id and classifiers is not None:
                return classifiers.draft(client, call, scope, send)
            return send(client, call, scope)

        def work(client: ModelServiceClient) -> CallWork:
            context = call.context
            uncached = client.uncached_tokens(context.sequence_id, context.tokens)
            return CallWork(call.max_draft_tokens, uncached + call.max_draft_tokens)

        started = time.monotonic()
        try:
            outcome, self.drafter_replica = await drafters.call(
                invoke, prefer=self.drafter_replica, work=work, deadline=self._scope.deadline
            )
        except DeadlineExceededError:
            if self._scope.deadline.expired():
                raise
            raise DrafterFailedError("the drafter did not answer in time") from None
        except (PolyspecError, RuntimeError) as exc:  # unavailable, over capacity, refused, malformed
            raise DrafterFailedError(str(exc)) from exc
        self.times.add_draft(started, outcome.stats.compute_seconds)
        drafters.costs.observe(outcome.stats)
        return outcome

    async def score(self, call: ScoreCall) -> ScoreOutcome:
        """One Score on a target replica (another one when it fails or hangs)."""
        targets = self._services.targets

        def work(client: ModelServiceClient) -> CallWork:
            context = call.context
            uncached = client.uncached_tokens(context.sequence_id, context.tokens)
            return CallWork(1, uncached + len(call.candidate_tokens))

        started = time.monotonic()
        outcome, self.target_replica = await targets.call(
            lambda client, timeout: client.score(call, self._scope.with_timeout(timeout)),
            prefer=self.target_replica,
            work=work,
            deadline=self._scope.deadline,
        )
        self.times.add_score(started, outcome.stats.compute_seconds)
        targets.costs.observe(outcome.stats)
        return outcome

    async def lookup(self, call: DraftCall) -> DraftOutcome | None:
        """The lookup drafter's draft (None: none configured, ejected, or it failed: the round goes on
        without it; only the request's own deadline fails it)."""
        lookups = self._services.lookups
        if lookups is None or not lookups.usable():
            return None
        started = time.monotonic()
        try:
            outcome, _ = await lookups.call(
                lambda client, timeout: client.draft(call, self._scope.with_timeout(timeout)),
                deadline=self._scope.deadline,
            )
        except DeadlineExceededError:
            if self._scope.deadline.expired():
                raise
            return None
        except (PolyspecError, RuntimeError) as exc:
            log.warning("lookup_drafter_failed", error=str(exc))
            return None
        self.times.add_draft(started, outcome.stats.compute_seconds)
        return outcome

    def drafter_usable(self) -> bool:
        """Whether a drafter replica may take a call (false while every one is ejected)."""
        drafters = self._services.drafters
        return drafters is not None and drafters.usable()

    def drafter_lag(self, sequence_id: str, context: Sequence[int]) -> int:
        """Tokens of the drafter's context its next call sends: what its cache must catch up on (the
        whole context before the first call, or on a replica it has not called yet)."""
        drafters = self._services.drafters
        client = None if drafters is None else drafters.client(self.drafter_replica)
        return len(context) if client is None else client.uncached_tokens(sequence_id, context)


@dataclass
class RoundCounters:
    """Work done so far by one request."""

    rounds: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    target_forwards: int = 0
    drafter_forwards: int = 0
    emulated_latency: bool = False
    drafter_ejected_rounds: int = 0  # rounds run target-only while every drafter replica was ejected
    lookup_rounds: int = 0  # rounds that verified the lookup drafter's draft
    target_tokens_computed: int = 0  # tokens fed through target forwards (DSI: discarded ones too)
    verifications_preempted: int = 0  # DSI: Score calls cancelled or discarded
    call_queue_seconds: float = 0.0  # DSI: time finished drafts waited for a free target replica
    target_replicas: set[str] = field(default_factory=set)  # target replicas that served a Score


@dataclass
class RequestRun:
    """One request while it runs: what stays fixed (``frame``), its output and drafter view, its counters.

    The target sees its prompt ids followed by the output ids. A same-vocabulary drafter sees its prompt
    ids followed by the same output ids; a cross-vocabulary drafter its prompt ids followed by its own
    view of the output text (``view``).
    """

    services: LoopServices
    frame: RequestFrame
    scope: CallScope
    calls: ServiceCalls
    output: list[int] = field(default_factory=list)
    counters: RoundCounters = field(default_factory=RoundCounters)
    fallback_reason: str = ""
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float = 0.0
    view: DrafterView | None = None  # cross-vocabulary algorithms only
    lookup: LookupChooser | None = None  # with a lookup drafter: per round, its draft or the model's
    near_ties: list[int] = field(default_factory=list)  # output positions decided at a near-tie
    scheduler: SchedulerName = SchedulerName.SI  # the scheduler that runs the request (never AUTO)
    scheduler_note: str = ""  # e.g. SLRS verified as SLEM under DSI

    @classmethod
    def start(
        cls, services: LoopServices, params: GenerationParams, plan: RequestPlan, deadline: Deadline
    ) -> RequestRun:
        nonce = uuid.uuid4().hex[:12]
        scope = CallScope(deadline, Traffic(), services.settings.call_timeout_seconds)
        pair = services.pair
        frame = RequestFrame(
            params=params,
            plan=plan,
            target=pair.target,
            drafter=pair.drafter,
            alignment=pair.alignment,
            target_sequence_id=f"{params.request_id}/{nonce}/target",
            drafter_sequence_id=f"{params.request_id}/{nonce}/drafter",
            max_support=services.settings.max_support,
            slrs_enumeration_budget=services.slrs_enumeration_budget,
            near_tie_logit_margin=near_tie_margin(services.settings.near_tie_logit_margin, pair.target.dtype),
        )
        run = cls(services, frame, scope, ServiceCalls(services, scope), fallback_reason=plan.fallback_reason)
        if services.lookups is not None and params.algorithm is not AlgorithmName.AR:
            run.lookup = LookupChooser(services.estimates)
        run.counters.emulated_latency = pair.emulated_latency
        if plan.cross_vocabulary:
            run.view = DrafterView()
        return run

    @property
    def lookup_sequence_id(self) -> str:
        """The request's sequence on the lookup drafter (it reads the target's context)."""
        return self.frame.target_sequence_id.removesuffix("/target") + "/lookup"

    @property
    def params(self) -> GenerationParams:
        return self.frame.params

    @property
    def plan(self) -> RequestPlan:
        return self.frame.plan

    @property
    def target(self) -> ModelEndpoint:
        return self.frame.target

    @property
    def drafting(self) -> bool:
        """Whether rounds still draft (a speculative plan that has not fallen back)."""
        return self.plan.drafter_prompt is not None and not self.fallback_reason

    def snapshot(self) -> RoundSnapshot:
        """The request frozen at the start of its next round."""
        return RoundSnapshot(self.frame, self.counters.rounds, tuple(self.output), self.view, self.drafting)

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
            fallback_reason="; ".join(
                r
                for r in (self.plan.note, self.scheduler_note, self.fallback_reason, self._ejected_note())
                if r
            ),
            seed=self.plan.seed,
            near_tie_positions=tuple(self.near_ties),
            drafter_dtype=self._drafter_dtype(),
            target_dtype=self.target.dtype,
            scheduler=self.scheduler,
            target_replicas_used=len(counters.target_replicas),
            verifications_preempted=counters.verifications_preempted,
            target_tokens_computed=counters.target_tokens_computed,
            call_queue_seconds=counters.call_queue_seconds,
            **asdict(self.calls.times),
        )

    def _drafter_dtype(self) -> str:
        """The drafter's precision when the plan drafts with it ("" for target-only plans)."""
        drafter = self.frame.drafter
        return drafter.dtype if drafter is not None and self.plan.drafter_prompt is not None else ""

    def _ejected_note(self) -> str:
        rounds = self.counters.drafter_ejected_rounds
        if not rounds:
            return ""
        return f"the drafter was ejected after repeated failures: {rounds} rounds decoded target-only"


# Default near-tie margins by the target's precision: well above the rounding difference between a
# one-token decode and a multi-token verification forward, well below a typical top-2 gap.
NEAR_TIE_MARGINS = {"float32": 0.01, "float64": 1e-6, "bfloat16": 0.5, "float16": 0.25}


def near_tie_margin(configured: float | None, target_dtype: str) -> float:
    """The top-2 logit margin under which a greedy output token is recorded as a near-tie."""
    if configured is not None:
        return configured
    dtype = target_dtype.removeprefix("torch.").split("+")[0]  # "float32+int8-dynamic": its compute dtype
    return NEAR_TIE_MARGINS.get(dtype, NEAR_TIE_MARGINS["float32"])


def _reason_label(reason: str) -> str:
    """A low-cardinality metric label for a fallback reason."""
    lowered = reason.lower()
    for label in ("unavailable", "over capacity", "did not answer", "context window", "malformed"):
        if label in lowered:
            return label.replace(" ", "_")
    return "other"
