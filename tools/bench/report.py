"""Aggregates and speedups per configuration, the greedy identity check, the JSON document and the table."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tools.bench.assistant import variant_of
from tools.bench.breakdown import RoundBreakdown, round_breakdown, summed_totals, target_step_seconds
from tools.bench.compare import format_comparisons, peer_comparisons
from tools.bench.options import BenchOptions
from tools.bench.records import Configuration, ConfigurationRun, Engine, PromptRecord

FORMAT_VERSION = 2


@dataclass(frozen=True)
class Aggregate:
    """One configuration over its prompts (totals, means and medians; None where not measured)."""

    prompts: int
    output_tokens: int
    seconds: float
    tokens_per_second: float
    """Aggregate: total output tokens / total generation time."""
    mean_tokens_per_second: float
    median_tokens_per_second: float
    median_seconds: float
    client_tokens_per_second: float | None
    """Total output tokens / total SDK wall-clock time (services only)."""
    mean_time_to_first_token_seconds: float | None
    median_time_to_first_token_seconds: float | None
    acceptance_rate: float | None
    """Total accepted / total draft tokens (None when nothing was drafted)."""
    mean_acceptance_rate: float | None
    draft_tokens_per_round: float | None
    """Total draft tokens / total rounds: the mean draft length (target-only rounds count as 0)."""
    tokens_per_target_forward: float | None
    bytes_per_round: float | None
    fallbacks: int
    emulated_latency: bool
    algorithms_ran: tuple[str, ...]
    """What the coordinator reports it ran (``auto`` resolves; a fallback runs target-only)."""


def _total(values: Sequence[int | None]) -> int | None:
    present = [value for value in values if value is not None]
    return sum(present) if present else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _mean_median(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    present = [value for value in values if value is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.median(present)


def aggregate(records: Sequence[PromptRecord]) -> Aggregate:
    """The aggregate of a non-empty list of records."""
    tokens = sum(r.output_tokens for r in records)
    seconds = sum(r.seconds for r in records)
    client_times = [r.client_seconds for r in records if r.client_seconds is not None]
    client_seconds = sum(client_times) if len(client_times) == len(records) else None
    ttft = _mean_median([r.time_to_first_token_seconds for r in records])
    drafted = _total([r.draft_tokens for r in records])
    accepted = _total([r.accepted_tokens for r in records])
    rounds = _total([r.rounds for r in records])
    traffic = _total(
        [None if r.bytes_sent is None else r.bytes_sent + (r.bytes_received or 0) for r in records]
    )
    return Aggregate(
        prompts=len(records),
        output_tokens=tokens,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        mean_tokens_per_second=statistics.fmean(r.tokens_per_second for r in records),
        median_tokens_per_second=statistics.median(r.tokens_per_second for r in records),
        median_seconds=statistics.median(r.seconds for r in records),
        client_tokens_per_second=_ratio(tokens, client_seconds),
        mean_time_to_first_token_seconds=ttft[0],
        median_time_to_first_token_seconds=ttft[1],
        acceptance_rate=_ratio(accepted, drafted),
        mean_acceptance_rate=_mean_median([r.acceptance_rate for r in records if r.draft_tokens])[0],
        draft_tokens_per_round=_ratio(drafted, rounds),
        tokens_per_target_forward=_ratio(tokens, _total([r.target_forwards for r in records])),
        bytes_per_round=_ratio(traffic, rounds),
        fallbacks=sum(1 for r in records if r.fallback_reason),
        emulated_latency=any(r.emulated_latency for r in records),
        algorithms_ran=tuple(sorted({r.algorithm_ran for r in records if r.algorithm_ran})),
    )


def paired_speedup(run: ConfigurationRun, baseline: ConfigurationRun | None) -> float | None:
    """The geometric mean, over the prompts both ran, of the baseline's seconds per output token divided
    by ``run``'s: per-prompt speedups, so prompt lengths and slow drifts of the machine cancel out.
    None when no prompt has timed records with output tokens in both."""
    if baseline is None:
        return None
    base = {r.prompt_index: r for r in baseline.records if r.output_tokens > 0 and r.seconds > 0}
    ratios = [
        (base[r.prompt_index].seconds / base[r.prompt_index].output_tokens) / (r.seconds / r.output_tokens)
        for r in run.records
        if r.prompt_index in base and r.output_tokens > 0 and r.seconds > 0
    ]
    return statistics.geometric_mean(ratios) if ratios else None


def identity_reference(configuration: Configuration, *, same_kernels: bool) -> Configuration | None:
    """What a greedy configuration's tokens must equal: its engine's ``ar``; for transformers' ``ar``,
    the services' ``ar`` when both compute with the same kernels (``same_kernels``: the services run
    ``--linear-kernel torch``; other kernels round differently and may break greedy ties otherwise).
    None for the services' ``ar`` itself and for sampling."""
    if not configuration.greedy:
        return None
    if configuration.method != "ar":
        return configuration.baseline(configuration.engine)
    if configuration.engine == "transformers" and same_kernels:
        return configuration.baseline("services")
    return None


def greedy_identity(
    run: ConfigurationRun, by_config: dict[Configuration, ConfigurationRun], *, same_kernels: bool
) -> dict[int, bool]:
    """Prompt index -> whether the tokens equal the reference's (prompts both ran; empty if none)."""
    reference = identity_reference(run.configuration, same_kernels=same_kernels)
    other = by_config.get(reference) if reference is not None else None
    if other is None:
        return {}
    expected = {r.prompt_index: r.token_ids for r in other.records}
    return {
        r.prompt_index: r.token_ids == expected[r.prompt_index]
        for r in run.records
        if r.prompt_index in expected
    }


@dataclass(frozen=True)
class Summary:
    """A configuration's aggregate with its speedups and greedy identity.

    ``speedup_vs_*``: ratio of aggregate tokens/s; ``paired_speedup_vs_*``: ``paired_speedup``."""

    run: ConfigurationRun
    aggregate: Aggregate | None
    speedup_vs_services_ar: float | None
    speedup_vs_transformers_ar: float | None
    paired_speedup_vs_services_ar: float | None
    paired_speedup_vs_transformers_ar: float | None
    identity_reference: str | None
    identical: dict[int, bool]
    breakdown: RoundBreakdown | None = None
    """Where a round's time goes and the ideal speedup (services' drafting configurations)."""

    @property
    def mismatches(self) -> list[int]:
        return [index for index, same in self.identical.items() if not same]


def summarize(runs: Sequence[ConfigurationRun], *, same_kernels: bool) -> list[Summary]:
    """One summary per run, speedups against the ``ar`` of each engine at the same temperature."""
    by_config = {run.configuration: run for run in runs}
    aggregates = {run.configuration: aggregate(run.records) for run in runs if run.records}

    def speedup(configuration: Configuration, engine: Engine) -> float | None:
        mine = aggregates.get(configuration)
        base = aggregates.get(configuration.baseline(engine))
        return (
            None if mine is None or base is None else _ratio(mine.tokens_per_second, base.tokens_per_second)
        )

    def paired(run: ConfigurationRun, engine: Engine) -> float | None:
        return paired_speedup(run, by_config.get(run.configuration.baseline(engine)))

    summaries = []
    for run in runs:
        reference = identity_reference(run.configuration, same_kernels=same_kernels)
        measured = speedup(run.configuration, "services")
        summaries.append(
            Summary(
                run=run,
                aggregate=aggregates.get(run.configuration),
                speedup_vs_services_ar=measured,
                speedup_vs_transformers_ar=speedup(run.configuration, "transformers"),
                paired_speedup_vs_services_ar=paired(run, "services"),
                paired_speedup_vs_transformers_ar=paired(run, "transformers"),
                identity_reference=None if reference is None else reference.label,
                identical=greedy_identity(run, by_config, same_kernels=same_kernels),
                breakdown=_breakdown(run, measured, by_config.get(run.configuration.baseline("services"))),
            )
        )
    return summaries


def _breakdown(
    run: ConfigurationRun, measured_speedup: float | None, ar: ConfigurationRun | None
) -> RoundBreakdown | None:
    """The round breakdown of a services configuration that drafts (None for ar and transformers);
    ``ar``: the services' ar at the same temperature, whose target compute per token the ideal uses."""
    if run.configuration.engine != "services" or run.configuration.method == "ar" or not run.records:
        return None
    step = None if ar is None or not ar.records else target_step_seconds(summed_totals(ar.records))
    return round_breakdown(run.records, measured_speedup, step)


@dataclass(frozen=True)
class BestAssisted:
    """transformers' fastest assisted variant at one temperature (aggregate tokens/s), among those run."""

    temperature: float
    configuration: str
    tokens_per_second: float
    variants: dict[str, float]
    """Every assisted variant that ran at this temperature: label -> tokens/s."""


def best_assisted(summaries: Sequence[Summary]) -> list[BestAssisted]:
    """Per temperature, the transformers assisted variant (tools/bench/assistant.py) with the highest
    aggregate tokens/s; temperatures where none ran are left out."""
    variants: dict[float, dict[str, float]] = {}
    for summary in summaries:
        configuration = summary.run.configuration
        if configuration.engine != "transformers" or variant_of(configuration.method) is None:
            continue
        if summary.aggregate is not None:
            by_label = variants.setdefault(configuration.temperature, {})
            by_label[configuration.label] = summary.aggregate.tokens_per_second
    best = []
    for temperature, by_label in variants.items():
        label = max(by_label, key=lambda name: by_label[name])
        best.append(BestAssisted(temperature, label, by_label[label], by_label))
    return best


def _best_assisted_lines(summaries: Sequence[Summary]) -> list[str]:
    lines = []
    for best in best_assisted(summaries):
        others = ", ".join(f"{label} {value:.2f}" for label, value in best.variants.items())
        lines.append(
            f"transformers' fastest assisted variant at T={best.temperature:g}: {best.configuration} "
            f"({best.tokens_per_second:.2f} tok/s; variants run: {others})"
        )
    return lines


def _record_json(record: PromptRecord, identical: bool | None) -> dict[str, Any]:
    fields = dataclasses.asdict(record)
    fields["token_ids"] = list(record.token_ids)
    fields["tokens_per_target_forward"] = record.tokens_per_target_forward
    fields["bytes_per_round"] = record.bytes_per_round
    fields["identical_to_reference"] = identical
    return fields


def _summary_json(summary: Summary) -> dict[str, Any]:
    configuration = summary.run.configuration
    by_index = {r.prompt_index: r.task_id for r in summary.run.records}
    return {
        "label": configuration.label,
        **dataclasses.asdict(configuration),
        "skipped": summary.run.skipped,
        "settings": summary.run.settings,
        "aggregate": None if summary.aggregate is None else dataclasses.asdict(summary.aggregate),
        "speedup_vs_services_ar": summary.speedup_vs_services_ar,
        "speedup_vs_transformers_ar": summary.speedup_vs_transformers_ar,
        "paired_speedup_vs_services_ar": summary.paired_speedup_vs_services_ar,
        "paired_speedup_vs_transformers_ar": summary.paired_speedup_vs_transformers_ar,
        "round_breakdown": None if summary.breakdown is None else dataclasses.asdict(summary.breakdown),
        "greedy_identity": None
        if not summary.identical
        else {
            "reference": summary.identity_reference,
            "identical": sum(summary.identical.values()),
            "compared": len(summary.identical),
            "mismatched_tasks": [by_index[index] for index in summary.mismatches],
        },
        "records": [_record_json(r, summary.identical.get(r.prompt_index)) for r in summary.run.records],
    }


def build_document(
    options: BenchOptions,
    machine: dict[str, Any],
    models: dict[str, Any],
    summaries: Sequence[Summary],
    created: str,
    *,
    updated: str,
    complete: bool,
) -> dict[str, Any]:
    """The JSON document of one bench run (``complete`` False: written while it still runs)."""
    mismatches = [
        {"configuration": s.run.configuration.label, "reference": s.identity_reference, "prompt_index": index}
        for s in summaries
        for index in s.mismatches
    ]
    return {
        "format_version": FORMAT_VERSION,
        "created": created,
        "updated": updated,
        "complete": complete,
        "benchmarking_flags": options.benchmarking_flags(),
        "machine": machine,
        "models": models,
        "settings": options.model_dump(mode="json"),
        "greedy_mismatches": mismatches,
        "configurations": [_summary_json(s) for s in summaries],
        "peer_comparisons": [dataclasses.asdict(c) for c in peer_comparisons([s.run for s in summaries])],
        "transformers_best_assisted": [dataclasses.asdict(b) for b in best_assisted(summaries)],
    }


# (header, width): "vs" columns are aggregate tok/s ratios, "paired" ones geometric means of per-prompt ones.
_COLUMNS = (
    ("n", 4),
    ("tok/s", 8),
    ("med tok/s", 10),
    ("TTFT s", 8),
    ("accept", 7),
    ("draft/rnd", 10),
    ("tok/fwd", 8),
    ("B/round", 8),
    ("vs ar", 7),
    ("paired", 7),
    ("vs hf ar", 9),
    ("hf paired", 10),
    ("greedy==", 9),
    ("drf ms/r", 9),
    ("tgt ms/r", 9),
    ("wire ms/r", 11),
    ("coord ms/r", 11),
    ("ideal", 7),
    ("overhead", 9),
)
SPEEDUP_NOTE = (
    "vs ar / vs hf ar: tok/s over that of the services' / transformers' ar at the same temperature; "
    "paired: geometric mean of per-prompt speedups (prompts both ran)"
)
BREAKDOWN_NOTE = (
    "ms/r: mean per round of drafter compute, target compute, wire+queue (calls - compute) and coordinator "
    "(total - calls; overlapped under DSI); ideal: tokens per round x ar's target compute per token / "
    "compute per round (no orchestration); overhead: 1 - vs ar / ideal"
)


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _identity_cell(summary: Summary) -> str:
    if not summary.identical:
        return "-"
    return f"{sum(summary.identical.values())}/{len(summary.identical)}"


def _row(summary: Summary, width: int) -> str:
    label = summary.run.configuration.label.ljust(width)
    result = summary.aggregate
    if result is None:
        return f"{label}  skipped: {summary.run.skipped}"
    cells = (
        str(result.prompts),
        _fmt(result.tokens_per_second, ".2f"),
        _fmt(result.median_tokens_per_second, ".2f"),
        _fmt(result.mean_time_to_first_token_seconds, ".3f"),
        _fmt(result.acceptance_rate, ".0%"),
        _fmt(result.draft_tokens_per_round, ".2f"),
        _fmt(result.tokens_per_target_forward, ".2f"),
        _fmt(result.bytes_per_round, ".0f"),
        _fmt(summary.speedup_vs_services_ar, ".2f", "x"),
        _fmt(summary.paired_speedup_vs_services_ar, ".2f", "x"),
        _fmt(summary.speedup_vs_transformers_ar, ".2f", "x"),
        _fmt(summary.paired_speedup_vs_transformers_ar, ".2f", "x"),
        _identity_cell(summary),
        *_breakdown_cells(summary.breakdown),
    )
    return label + _cells(cells)


def _breakdown_cells(breakdown: RoundBreakdown | None) -> tuple[str, ...]:
    if breakdown is None:
        return ("-",) * 6
    shared = "overlapped" if breakdown.overlapped else "-"

    def ms(seconds: float | None) -> str:
        return shared if seconds is None else f"{1000 * seconds:.1f}"

    return (
        ms(breakdown.drafter_compute_seconds),
        ms(breakdown.target_compute_seconds),
        ms(breakdown.wire_seconds),
        ms(breakdown.coordinator_seconds),
        _fmt(breakdown.ideal_speedup, ".2f", "x"),
        _fmt(breakdown.overhead, ".0%"),
    )


def _cells(cells: Sequence[str]) -> str:
    return "".join(cell.rjust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=True))


def format_table(summaries: Sequence[Summary], options: BenchOptions) -> str:
    """A compact table: one row per configuration (tok/s = total tokens / total generation time)."""
    width = max([len("configuration"), *(len(s.run.configuration.label) for s in summaries)])
    lines = [
        "configuration".ljust(width) + _cells([header for header, _ in _COLUMNS]),
        *(_row(summary, width) for summary in summaries),
        SPEEDUP_NOTE,
        BREAKDOWN_NOTE,
    ]
    mismatches = [(s, index) for s in summaries for index in s.mismatches]
    for summary, index in mismatches:
        lines.append(
            f"GREEDY MISMATCH: {summary.run.configuration.label} differs from "
            f"{summary.identity_reference} on HumanEval/{index}"
        )
    if options.services and options.reference and options.linear_kernel != "torch":
        lines.append(
            "note: the services compute linear layers with oneDNN "
            f"(--linear-kernel {options.linear_kernel}), transformers with torch's kernels; float rounding "
            "differs, so greedy ties may break differently and each engine's outputs are checked against "
            "its own ar (--linear-kernel torch compares both)"
        )
    lines.extend(_best_assisted_lines(summaries))
    comparisons = format_comparisons(peer_comparisons([s.run for s in summaries]))
    if comparisons:
        lines.append(comparisons)
    lines.extend(options.benchmarking_flags())
    return "\n".join(lines)
