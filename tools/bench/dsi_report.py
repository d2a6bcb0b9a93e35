"""The DSI benchmark's pure side: records, overrun rejection, the model's prediction, rows, table, JSON.

A run pads every forward of every service to a fixed latency (the drafter's too), so replicas that share
a few cores behave like replicas on their own accelerators. That holds only while the real compute fits
under the padding: a forward that took longer (an overrun, counted by each model service) makes the run
slower than the emulated deployment, so a replica count with more than ``OVERRUN_LIMIT`` of its forwards
overrun is rejected: its row is marked and the table says so.

The prediction is ``coordinator.dsimodel``'s for the same inputs: ``c`` = drafter / target padded cost,
``a`` = the acceptance measured by the SI runs, ``k`` = the lookahead, ``SP`` = the replica count;
target-only decoding takes one target forward per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from coordinator.dsimodel import best_si, choose_schedule
from coordinator.dsimodel.offline import si_latency
from tools.bench.breakdown import (
    ZERO_TOTALS,
    RoundBreakdown,
    RoundTotals,
    breakdown_of,
    target_step_seconds,
)

Mode = Literal["target-only", "si", "dsi"]
OVERRUN_LIMIT = 0.01  # the largest share of overrun forwards a measured run may have
FORMAT = "polyspec-dsi-bench"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ForwardCount:
    """A model service's running totals (its Info): forwards served and those that overran the pad."""

    forwards: int
    overruns: int


def overrun_share(before: Sequence[ForwardCount], after: Sequence[ForwardCount]) -> float:
    """The share of the forwards served between two readings of every service that overran."""
    forwards = sum(a.forwards - b.forwards for b, a in zip(before, after, strict=True))
    overruns = sum(a.overruns - b.overruns for b, a in zip(before, after, strict=True))
    return overruns / forwards if forwards > 0 else 0.0


def rejected(share: float, limit: float = OVERRUN_LIMIT) -> bool:
    """Whether a run whose forwards overran at ``share`` misrepresents the emulated deployment."""
    return share > limit


@dataclass(frozen=True)
class DsiRecord:
    """One generation: what was asked (mode, replicas) and what the coordinator reports it ran."""

    replicas: int
    mode: Mode
    prompt_index: int
    output_tokens: int
    total_seconds: float
    time_to_first_token_seconds: float
    draft_tokens: int
    accepted_tokens: int
    scheduler_ran: str
    target_replicas_used: int
    verifications_preempted: int
    target_tokens_per_output_token: float
    token_ids: tuple[int, ...]
    totals: RoundTotals | None = None
    """Rounds, forwards and the calls' compute and wall time the coordinator reports (the breakdown's)."""

    @property
    def decode_seconds(self) -> float:
        return max(self.total_seconds - self.time_to_first_token_seconds, 0.0)


def tokens_per_second(records: Sequence[DsiRecord]) -> float:
    """Output tokens over generation time, pooled. Under padding the prefill is one padded forward like
    any other, so this is the rate the model predicts (up to the last, shortened round)."""
    seconds = sum(r.total_seconds for r in records)
    return sum(r.output_tokens for r in records) / seconds if seconds > 0 else 0.0


def decode_tokens_per_second(records: Sequence[DsiRecord]) -> float:
    """Tokens after the first over the time after the first (the prefill left out), pooled. The tokens
    a speculative first round commits with the first one count without their time, so a short
    generation reads high."""
    tokens = sum(max(r.output_tokens - 1, 0) for r in records)
    seconds = sum(r.decode_seconds for r in records)
    return tokens / seconds if seconds > 0 else 0.0


def acceptance(records: Sequence[DsiRecord]) -> float:
    drafted = sum(r.draft_tokens for r in records)
    return sum(r.accepted_tokens for r in records) / drafted if drafted else 0.0


@dataclass(frozen=True)
class Prediction:
    """The model's decode tokens/s for target-only, SI and DSI at (c, a, k, SP)."""

    drafter_cost: float
    acceptance: float
    lookahead: int
    servers: int
    target_only: float
    si: float
    dsi: float
    dsi_knobs: str


def predict(
    target_ms: float, drafter_ms: float, measured_acceptance: float, lookahead: int | None, servers: int
) -> Prediction:
    """``coordinator.dsimodel``'s speeds for the padded costs (``lookahead`` None: SI's best k)."""
    c = drafter_ms / target_ms
    a = min(max(measured_acceptance, 0.0), 0.999999)
    k = lookahead if lookahead is not None else best_si(c, a)[0]
    dsi = choose_schedule(c, a, servers).dsi
    per_forward = 1000.0 / target_ms  # tokens/s of one target forward per token
    return Prediction(
        drafter_cost=c,
        acceptance=a,
        lookahead=k,
        servers=servers,
        target_only=per_forward,
        si=per_forward / si_latency(c, a, k),
        dsi=per_forward / dsi.latency,
        dsi_knobs=dsi.knobs.label(),
    )


@dataclass(frozen=True)
class DsiRow:
    """One (replica count, mode): measured, reported and predicted."""

    replicas: int
    mode: Mode
    prompts: int
    tokens_per_second: float  # output / total: compared with the model and with SI
    decode_tokens_per_second: float
    acceptance: float
    schedulers_ran: tuple[str, ...]
    target_replicas_used: int
    verifications_preempted: int
    target_tokens_per_output_token: float
    greedy_identical: bool | None  # every output equals target-only's (greedy runs; None otherwise)
    predicted_tokens_per_second: float | None
    overrun_share: float
    rejected: bool
    breakdown: RoundBreakdown | None = None
    """Where a round's time goes (``tools.bench.breakdown``; speedup measured over target-only)."""


def _pooled_target_tokens(records: Sequence[DsiRecord]) -> float:
    outputs = sum(r.output_tokens for r in records)
    computed = sum(r.target_tokens_per_output_token * r.output_tokens for r in records)
    return computed / outputs if outputs else 0.0


def _identical(records: Sequence[DsiRecord], baseline: Sequence[DsiRecord]) -> bool:
    reference = {r.prompt_index: r.token_ids for r in baseline}
    return all(reference.get(r.prompt_index) == r.token_ids for r in records)


def build_row(
    mode: Mode,
    records: Sequence[DsiRecord],
    baseline: Sequence[DsiRecord],
    *,
    prediction: Prediction | None,
    share: float,
    greedy: bool,
) -> DsiRow:
    """The row of ``records`` (one mode at one replica count) against target-only's ``baseline``."""
    ran = {r.scheduler_ran for r in records}
    modelled = ran.pop() if len(ran) == 1 else mode  # a dsi request the coordinator ran as SI: SI's model
    predicted = None if prediction is None else float(getattr(prediction, modelled.replace("-", "_")))
    return DsiRow(
        replicas=records[0].replicas if records else 0,
        mode=mode,
        prompts=len(records),
        tokens_per_second=tokens_per_second(records),
        decode_tokens_per_second=decode_tokens_per_second(records),
        acceptance=acceptance(records),
        schedulers_ran=tuple(sorted({r.scheduler_ran for r in records})),
        target_replicas_used=max((r.target_replicas_used for r in records), default=0),
        verifications_preempted=sum(r.verifications_preempted for r in records),
        target_tokens_per_output_token=_pooled_target_tokens(records),
        greedy_identical=_identical(records, baseline) if greedy else None,
        predicted_tokens_per_second=predicted,
        overrun_share=share,
        rejected=rejected(share),
        breakdown=None if mode == "target-only" else _breakdown(records, baseline),
    )


def _breakdown(records: Sequence[DsiRecord], baseline: Sequence[DsiRecord]) -> RoundBreakdown | None:
    totals = [r.totals for r in records]
    if not totals or any(t is None for t in totals):
        return None
    base = tokens_per_second(baseline)
    measured = tokens_per_second(records) / base if base > 0 else None
    base_totals = [r.totals for r in baseline]
    step = None
    if base_totals and all(t is not None for t in base_totals):
        step = target_step_seconds(sum((t for t in base_totals if t is not None), start=ZERO_TOTALS))
    return breakdown_of(sum((t for t in totals if t is not None), start=ZERO_TOTALS), measured, step)


def _breakdown_cells(breakdown: RoundBreakdown | None) -> list[str]:
    if breakdown is None:
        return ["-", "-", "-", "-"]

    def ms(seconds: float | None) -> str:
        return "overlapped" if seconds is None else f"{1000 * seconds:.1f}"

    compute = f"{ms(breakdown.drafter_compute_seconds)} / {ms(breakdown.target_compute_seconds)}"
    shared = (
        "overlapped"
        if breakdown.overlapped
        else f"{ms(breakdown.wire_seconds)} / {ms(breakdown.coordinator_seconds)}"
    )
    overhead = "-" if breakdown.overhead is None else f"{100 * breakdown.overhead:.0f}%"
    return [compute, shared, _cell(breakdown.ideal_speedup), overhead]


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row_line(row: DsiRow, si: DsiRow | None) -> str:
    ratio = _cell(row.tokens_per_second / si.tokens_per_second) if si and si.tokens_per_second else "-"
    vs_model = (
        _cell(row.tokens_per_second / row.predicted_tokens_per_second)
        if row.predicted_tokens_per_second
        else "-"
    )
    identical = {None: "-", True: "yes", False: "NO"}[row.greedy_identical]
    overruns = f"{100 * row.overrun_share:.1f}%" + (" REJECTED" if row.rejected else "")
    cells = [
        str(row.replicas), row.mode, ",".join(row.schedulers_ran), _cell(row.tokens_per_second),
        _cell(row.decode_tokens_per_second), ratio, _cell(row.predicted_tokens_per_second), vs_model,
        _cell(row.acceptance), str(row.verifications_preempted), _cell(row.target_tokens_per_output_token),
        identical, overruns, *_breakdown_cells(row.breakdown),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def format_dsi_table(rows: Sequence[DsiRow]) -> str:
    """Markdown: one line per (replicas, mode); x SI is against SI at the same replica count."""
    header = (
        "| replicas | asked | ran | tok/s | decode tok/s | x SI | model tok/s | measured / model "
        "| acceptance | pre-empted | target tok / output tok | greedy = target-only | overruns "
        "| drafter / target compute ms/round | wire / coordinator ms/round | ideal SI x | overhead |"
    )
    lines = [header, "|" + "---|" * 17]
    si_rows = {row.replicas: row for row in rows if row.mode == "si"}
    lines += [_row_line(row, si_rows.get(row.replicas)) for row in rows]
    if any(row.rejected for row in rows):
        lines.append(
            f"\nREJECTED: more than {100 * OVERRUN_LIMIT:g}% of the forwards of that replica count took "
            "longer than their emulated latency; raise the padding (--emulate-forward-ms, "
            "--emulate-drafter-forward-ms) until the real compute fits under it."
        )
    lines.append(
        "\nms/round: mean per round of the services' compute, wire+queue (calls - compute) and the "
        "coordinator (total - calls; overlapped under DSI). ideal SI x: tokens per round x "
        "target-only's compute per token / the rounds' compute (SI with no orchestration; none under DSI); "
        "overhead: 1 - measured x / ideal."
    )
    if any(row.mode == "dsi" and "dsi" not in row.schedulers_ran for row in rows):
        lines.append("\nNote: the coordinator ran some `dsi` requests as `si` (column `ran`).")
    return "\n".join(lines)


def build_dsi_document(
    settings: dict[str, Any],
    models: dict[str, Any],
    machine: dict[str, Any],
    *,
    rows: Sequence[DsiRow],
    predictions: dict[int, Prediction | None],
    records: Sequence[DsiRecord],
) -> dict[str, Any]:
    """The JSON document of a DSI bench run."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "models": models,
        "machine": machine,
        "overrun_limit": OVERRUN_LIMIT,
        "rows": [asdict(row) for row in rows],
        "predictions": {str(n): None if p is None else asdict(p) for n, p in predictions.items()},
        "records": [asdict(record) for record in records],
    }
