"""The PNG: aggregate tokens/s per configuration with speedup labels (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tools.bench.lookaheads import parse_bench_lookahead
from tools.bench.options import BenchOptions
from tools.bench.report import Summary

ENGINE_COLORS = {"services": "#1f77b4", "transformers": "#ff7f0e"}
ENGINE_LABELS = {
    "services": "polyspec services (SDK -> coordinator -> model services)",
    "transformers": "transformers generate, in-process",
}

CLASSIFIER_HATCH = "//"
CLASSIFIER_LABEL = "with the trained stop classifier (disco, disco:K, auto+disco; --disco-artifact)"


def uses_classifier(summary: Summary) -> bool:
    """Whether a configuration ran on the coordinator with the trained stop classifier."""
    lookahead = summary.run.configuration.lookahead
    return lookahead is not None and parse_bench_lookahead(lookahead).classifier


def _speedup_label(aggregate: float | None, paired: float | None, baseline: str) -> str | None:
    if aggregate is None:
        return None
    paired_text = "" if paired is None else f" (paired {paired:.2f}x)"
    return f"{aggregate:.2f}x{paired_text} vs {baseline}"


def _bar_label(summary: Summary) -> str:
    assert summary.aggregate is not None
    speedups = (
        _speedup_label(summary.speedup_vs_services_ar, summary.paired_speedup_vs_services_ar, "services ar"),
        _speedup_label(
            summary.speedup_vs_transformers_ar, summary.paired_speedup_vs_transformers_ar, "transformers ar"
        ),
    )
    parts = [f"{summary.aggregate.tokens_per_second:.2f} tok/s", *(part for part in speedups if part)]
    return "  " + ", ".join(parts)


def write_plot(
    path: Path, summaries: Sequence[Summary], options: BenchOptions, drafter: str, target: str
) -> None:
    """Writes a horizontal bar chart of every configuration that ran (skipped ones are listed below it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    measured = [s for s in summaries if s.aggregate is not None]
    skipped = [s for s in summaries if s.aggregate is None]
    figure = Figure(figsize=(12, 1.2 + 0.45 * max(1, len(measured)) + 0.25 * len(skipped)))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    labels = [s.run.configuration.label for s in measured]
    values = [s.aggregate.tokens_per_second for s in measured if s.aggregate is not None]
    colors = [ENGINE_COLORS[s.run.configuration.engine] for s in measured]
    bars = axes.barh(range(len(measured)), values, color=colors)
    for bar, summary in zip(bars, measured, strict=True):
        if uses_classifier(summary):
            bar.set_hatch(CLASSIFIER_HATCH)
    axes.set_yticks(range(len(measured)), labels)
    axes.set_ylim(len(measured) + 0.6, -0.6)  # top to bottom, a free row below the bars for the legend
    axes.bar_label(bars, [_bar_label(s) for s in measured], fontsize=8)
    axes.set_xlim(0, max(values, default=1.0) * 2.3)
    axes.set_xlabel("tokens/s (total output tokens / total generation time)")
    engines = sorted({s.run.configuration.engine for s in measured})
    handles = [Patch(color=ENGINE_COLORS[engine], label=ENGINE_LABELS[engine]) for engine in engines]
    if any(uses_classifier(s) for s in measured):
        handles.append(Patch(facecolor="white", hatch=CLASSIFIER_HATCH, label=CLASSIFIER_LABEL))
    axes.legend(handles=handles, loc="lower right", fontsize=8)
    title = (
        f"{drafter} drafting for {target}: {options.prompts} HumanEval prompts from "
        f"{options.prompt_offset}, {options.max_new_tokens} new tokens, batch 1"
    )
    axes.set_title(title, fontsize=10)
    notes = [f"skipped {s.run.configuration.label}: {s.run.skipped}" for s in skipped]
    notes += options.benchmarking_flags()
    if notes:
        figure.text(0.01, 0.01, "\n".join(notes), fontsize=7, color="#b00000", va="bottom", wrap=True)
    figure.tight_layout(rect=(0, 0.03 * len(notes), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
