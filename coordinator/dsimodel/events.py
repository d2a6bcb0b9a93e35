"""An event model of a DSI scheduler over a finite number of target servers (Monte-Carlo, seeded).

Same unit costs as the paper's model (``offline``): a target forward takes 1 whatever it verifies, a
drafter forward ``c`` per draft token, each draft token accepted with probability ``a`` independently.
Unlike the paper's model it has ``servers`` target servers and the knobs a scheduler chooses
(``SchedulerKnobs``):

- the drafter drafts on at the end of the chain, one token per ``c``; every ``block_size`` tokens close a
  block, which is verified on a free server (blocks wait in order for one); the drafter stops while
  ``depth * block_size`` draft tokens are uncommitted;
- a verification of the block at positions ``s .. s+b-1`` yields the target's distributions at
  ``s .. s+b``; results commit in position order. The distribution at the first uncommitted position
  decides it: a draft token there is accepted or rejected (its acceptance is drawn once, when it is
  drafted, so every distribution at that position agrees); without a draft token there the target's
  sample is the output token (the bonus token of SI);
- an output token the drafter did not propose (recovered or bonus) pre-empts every verification and the
  running draft; the drafter restarts from the corrected prefix. A pre-empted forward keeps its server
  until it ends unless ``preempted_frees_server`` (cancellation takes effect between forwards);
- with ``plain_steps``, a server that would idle while no verification covers the first uncommitted
  position takes a plain target step there (a verification of no draft tokens). Then the first
  uncommitted position is decided at least once per time unit: never slower than target-only decoding.

With one server, ``depth = 1`` and no plain steps this is SI with lookahead ``block_size`` exactly (the
drafter waits for each verification; a fully accepted block ends with the bonus token).

Outputs are long-run rates: the time to commit ``tokens`` output tokens, averaged over seeded runs.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

from core.errors import InvalidArgumentError

# A plain target step "verifies" no draft token: its one distribution is at the position it starts at.
_DRAFTER = -1  # the event id of the drafter's next draft token


@dataclass(frozen=True)
class SchedulerKnobs:
    """What a DSI scheduler chooses: draft tokens per verification, blocks in flight, plain steps."""

    block_size: int
    depth: int
    plain_steps: bool

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise InvalidArgumentError("block_size", f"must be >= 1, got {self.block_size}")
        if self.depth < 1:
            raise InvalidArgumentError("depth", f"must be >= 1, got {self.depth}")

    def label(self) -> str:
        return f"b={self.block_size} depth={self.depth}{' +plain' if self.plain_steps else ''}"


@dataclass(frozen=True)
class EventSetting:
    """The deployment the event model runs: costs (target forward = 1), acceptance, servers."""

    drafter_cost: float
    acceptance: float
    servers: int
    preempted_frees_server: bool = False
    paper_counting: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.drafter_cost) and self.drafter_cost > 0):
            raise InvalidArgumentError(
                "drafter_cost", f"must be a finite number > 0, got {self.drafter_cost}"
            )
        if not (0.0 <= self.acceptance <= 1.0):
            raise InvalidArgumentError("acceptance", f"must be in [0, 1], got {self.acceptance}")
        if self.servers < 1:
            raise InvalidArgumentError("servers", f"must be >= 1, got {self.servers}")


@dataclass(frozen=True)
class EventResult:
    """Long-run rates of one (setting, knobs): time and target forwards per output token."""

    setting: EventSetting
    knobs: SchedulerKnobs
    latency: float  # time units per output token (target-only decoding: 1)
    target_forwards_per_token: float  # every started forward, pre-empted ones included
    preempted_per_token: float  # forwards whose result was thrown away
    plain_steps_per_token: float

    @property
    def speedup_vs_nonsi(self) -> float:
        return 1.0 / self.latency


@dataclass
class _Job:
    """A target forward: distributions at ``start .. end`` on the context before ``start``."""

    start: int
    end: int
    epoch: int
    plain: bool


@dataclass
class _Counters:
    forwards: int = 0
    preempted: int = 0
    plain: int = 0


@dataclass
class _Run:
    """One generation's state. Positions count output tokens; drafts beyond ``committed`` are the chain."""

    setting: EventSetting
    knobs: SchedulerKnobs
    rng: random.Random
    time: float = 0.0
    committed: int = 0
    accepted_bits: list[bool] = field(default_factory=list)  # of draft positions committed .. chain_end-1
    chain_end: int = 0  # position the drafter drafts next
    block_start: int = 0  # first draft position not yet in a closed block
    queue: list[tuple[int, int]] = field(default_factory=list)  # closed blocks waiting for a server
    free_servers: int = 0
    running: dict[int, _Job] = field(default_factory=dict)  # event id -> job
    finished: list[_Job] = field(default_factory=list)  # results waiting for earlier positions
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, event id) heap
    next_id: int = 0
    epoch: int = 0
    drafter_busy: bool = False
    counters: _Counters = field(default_factory=_Counters)

    def start(self) -> None:
        self.free_servers = self.setting.servers
        self._restart_drafter()
        self._dispatch()
        self._maybe_draft()

    def step(self) -> None:
        """Handles the next event (the drafter's token or a finished forward)."""
        self.time, event = heapq.heappop(self.events)
        if event == _DRAFTER:
            self._on_draft_token()
        else:
            self._on_forward_done(self.running.pop(event))
        self._dispatch()
        self._maybe_draft()

    def _bit(self, position: int) -> bool:
        return self.accepted_bits[position - self.committed]

    def _on_draft_token(self) -> None:
        self.drafter_busy = False
        self.accepted_bits.append(self.rng.random() < self.setting.acceptance)
        self.chain_end += 1
        if self.chain_end - self.block_start == self.knobs.block_size:
            self.queue.append((self.block_start, self.chain_end))
            self.block_start = self.chain_end

    def _on_forward_done(self, job: _Job) -> None:
        if job.epoch != self.epoch:
            if not self.setting.preempted_frees_server:
                self.free_servers += 1  # the pre-empted forward has ended: its server is free now
            return
        self.free_servers += 1
        self.finished.append(job)
        self._commit()

    def _commit(self) -> None:
        """Decides positions in order from the finished results that reach the first uncommitted one."""
        progressed = True
        while progressed:
            progressed = False
            for job in list(self.finished):
                end = self._last_decided(job)
                if end < self.committed:
                    self.finished.remove(job)
                elif job.start <= self.committed:
                    self.finished.remove(job)
                    if not self._decide_through(end):
                        return
                    progressed = True

    def _last_decided(self, job: _Job) -> int:
        """The last position ``job`` may decide: its last distribution's, but in the paper's counting
        not a position drafted after the block (that draft token waits for its own block's verification)."""
        if self.setting.paper_counting and not job.plain and job.end < self.chain_end:
            return job.end - 1
        return job.end

    def _decide_through(self, end: int) -> bool:
        """Decides positions up to ``end``; False if an output token the drafter did not propose ended it."""
        while self.committed <= end:
            if self.committed < self.chain_end and self._bit(self.committed):
                self.accepted_bits.pop(0)
                self.committed += 1
                continue
            self.committed += 1  # recovered token, or the target's sample where nothing was drafted
            self._preempt()
            return False
        return True

    def _preempt(self) -> None:
        self.epoch += 1
        self.counters.preempted += len(self.running)
        if self.setting.preempted_frees_server:
            self.free_servers += len(self.running)
        self.finished.clear()
        self.queue.clear()
        self._restart_drafter()

    def _restart_drafter(self) -> None:
        self.accepted_bits = []
        self.chain_end = self.block_start = self.committed
        self.drafter_busy = False
        self.events = [(t, e) for t, e in self.events if e != _DRAFTER]
        heapq.heapify(self.events)

    def _maybe_draft(self) -> None:
        limit = self.knobs.depth * self.knobs.block_size
        if not self.drafter_busy and self.chain_end - self.committed < limit:
            self.drafter_busy = True
            heapq.heappush(self.events, (self.time + self.setting.drafter_cost, _DRAFTER))

    def _covered(self, position: int) -> bool:
        """Whether a running forward will decide ``position`` (in the paper's counting a block's last
        distribution may not: a plain step goes there too)."""
        last = 0 if self.setting.paper_counting else 1
        return any(
            job.epoch == self.epoch and job.start <= position < job.end + (1 if job.plain else last)
            for job in self.running.values()
        )

    def _dispatch(self) -> None:
        while self.free_servers > 0:
            while self.queue and self.queue[0][1] < self.committed:
                self.queue.pop(0)  # plain steps decided all of it while it waited
            if self.queue:
                start, end = self.queue.pop(0)
                self._launch(_Job(max(start, self.committed), end, self.epoch, plain=False))
            elif self.knobs.plain_steps and not self._covered(self.committed):
                self._launch(_Job(self.committed, self.committed, self.epoch, plain=True))
                self.counters.plain += 1
            else:
                return

    def _launch(self, job: _Job) -> None:
        self.free_servers -= 1
        self.counters.forwards += 1
        event = self.next_id
        self.next_id += 1
        self.running[event] = job
        heapq.heappush(self.events, (self.time + 1.0, event))


def simulate_events(
    setting: EventSetting, knobs: SchedulerKnobs, tokens: int = 2000, runs: int = 4, seed: int = 0
) -> EventResult:
    """Mean time and forwards per token over ``runs`` generations of ``tokens`` output tokens each."""
    if tokens < 1:
        raise InvalidArgumentError("tokens", f"must be >= 1, got {tokens}")
    if runs < 1:
        raise InvalidArgumentError("runs", f"must be >= 1, got {runs}")
    rng = random.Random(seed)
    time = 0.0
    output = 0
    counters = _Counters()
    for _ in range(runs):
        run = _Run(setting, knobs, random.Random(rng.getrandbits(64)))
        run.start()
        while run.committed < tokens:
            run.step()
        time += run.time
        output += run.committed
        counters.forwards += run.counters.forwards
        counters.preempted += run.counters.preempted
        counters.plain += run.counters.plain
    return EventResult(
        setting=setting,
        knobs=knobs,
        latency=time / output,
        target_forwards_per_token=counters.forwards / output,
        preempted_per_token=counters.preempted / output,
        plain_steps_per_token=counters.plain / output,
    )
