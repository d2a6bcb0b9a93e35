"""What the benchmark measures: prompts, configurations and one record per generation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Engine = Literal["services", "transformers"]


@dataclass(frozen=True)
class BenchPrompt:
    """One HumanEval task."""

    index: int
    task_id: str
    text: str


@dataclass(frozen=True)
class Configuration:
    """One way of generating: engine, method, temperature and (drafting services only) lookahead.

    Services methods are the coordinator's algorithms; transformers methods are ``ar`` (plain
    ``generate``), the assisted variants (``assistant_model=``: ``assisted``, ``assisted-adaptive``,
    ``assisted-heuristic``; across tokenizers ``uag``, ``uag-heuristic``: tools/bench/assistant.py) and
    ``lookup`` (prompt lookup decoding).
    """

    engine: Engine
    method: str
    temperature: float
    lookahead: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def label(self) -> str:
        lookahead = f" [{self.lookahead}]" if self.lookahead else ""
        return f"{self.engine} {self.method}{lookahead} T={self.temperature:g}"

    def baseline(self, engine: Engine) -> Configuration:
        """The autoregressive configuration of ``engine`` at this temperature."""
        return Configuration(engine, "ar", self.temperature)


@dataclass(frozen=True)
class PromptRecord:
    """One generation's measurements; fields an engine does not report are None."""

    prompt_index: int
    task_id: str
    output_tokens: int
    seconds: float
    """Generation time: the coordinator's total_seconds, or the in-process generate call."""
    tokens_per_second: float
    finish_reason: str
    token_ids: tuple[int, ...]
    client_seconds: float | None = None
    """Wall-clock time of the SDK call (adds the client's network hop)."""
    time_to_first_token_seconds: float | None = None
    acceptance_rate: float | None = None
    draft_tokens: int | None = None
    accepted_tokens: int | None = None
    target_forwards: int | None = None
    rounds: int | None = None
    bytes_sent: int | None = None
    bytes_received: int | None = None
    algorithm_ran: str | None = None
    lookahead_ran: str | None = None
    fallback_reason: str = ""
    emulated_latency: bool = False
    seed: int | None = None
    drafter_forwards: int | None = None
    scheduler_ran: str | None = None
    drafter_compute_seconds: float | None = None
    """Sum of the compute time the drafter services reported (GenerationStats; services only)."""
    target_compute_seconds: float | None = None
    drafter_call_seconds: float | None = None
    """Sum of the Draft calls' wall time from send to reply, as the coordinator saw them."""
    target_call_seconds: float | None = None

    @property
    def tokens_per_target_forward(self) -> float | None:
        if not self.target_forwards:
            return None
        return self.output_tokens / self.target_forwards

    @property
    def bytes_per_round(self) -> float | None:
        if not self.rounds or self.bytes_sent is None or self.bytes_received is None:
            return None
        return (self.bytes_sent + self.bytes_received) / self.rounds


@dataclass
class ConfigurationRun:
    """A configuration's records, or why it was skipped (e.g. the server refused the algorithm)."""

    configuration: Configuration
    records: list[PromptRecord] = field(default_factory=list)
    skipped: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    """Engine settings it ran with that the label does not say (transformers' assistant knobs)."""
