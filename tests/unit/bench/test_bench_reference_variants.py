"""transformers' assisted-generation variants in the reference: names, knobs, skips and the fastest one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_models import build_word_model
from tests.unit.bench.records import run
from tools.bench.assistant import ASSISTANT_VARIANTS, adapts_threshold, variant_of
from tools.bench.options import BenchOptions
from tools.bench.records import Configuration
from tools.bench.reference import (
    assistant_settings,
    load_model,
    reference_configurations,
    reference_skip_reason,
)
from tools.bench.report import best_assisted, build_document, format_table, summarize

VARIANTS = ("assisted", "assisted-adaptive", "assisted-heuristic")


def test_variants_keep_their_names_and_run_as_uag_across_vocabularies() -> None:
    options = BenchOptions(drafter="d", target="t", reference_methods=("ar", *VARIANTS, "lookup"))
    same = [c.method for c in reference_configurations(options, same_vocabulary=True)]
    assert same == ["ar", *VARIANTS, "lookup"]
    cross = [c.method for c in reference_configurations(options, same_vocabulary=False)]
    assert cross == ["ar", "uag", "uag-adaptive", "uag-heuristic", "lookup"]
    assert variant_of("uag-heuristic") == ASSISTANT_VARIANTS["assisted-heuristic"]
    assert variant_of("ar") is None and variant_of("lookup") is None


def test_the_adaptive_variant_is_skipped_where_transformers_cannot_adapt_the_threshold() -> None:
    assert reference_skip_reason("assisted-adaptive", same_vocabulary=True, sklearn_importable=True) is None
    no_sklearn = reference_skip_reason("assisted-adaptive", same_vocabulary=True, sklearn_importable=False)
    assert no_sklearn is not None and "scikit-learn" in no_sklearn
    cross = reference_skip_reason("uag-adaptive", same_vocabulary=False, sklearn_importable=True)
    assert cross is not None and "vocabulary" in cross
    for method in ("assisted", "assisted-heuristic", "uag", "ar", "lookup"):
        assert reference_skip_reason(method, same_vocabulary=True, sklearn_importable=False) is None
    assert adapts_threshold(0.4, same_vocabulary=True, sklearn_importable=True)
    assert not adapts_threshold(0.0, same_vocabulary=True, sklearn_importable=True)
    assert not adapts_threshold(0.4, same_vocabulary=False, sklearn_importable=True)


def test_variant_knobs_land_on_the_assistant_generation_config(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    folder = build_word_model(tmp_path / "drafter", "llama", seed=3)
    adaptive = load_model(folder)
    settings = assistant_settings(adaptive, "assisted-adaptive", same_vocabulary=True)
    assert settings == {
        "num_assistant_tokens": 20,
        "num_assistant_tokens_schedule": "constant",
        "assistant_confidence_threshold": 0.4,
        "adaptive_threshold": True,
    }
    assert adaptive.model.generation_config.assistant_confidence_threshold == 0.4
    heuristic = load_model(folder)
    settings = assistant_settings(heuristic, "assisted-heuristic", same_vocabulary=True)
    assert settings["num_assistant_tokens_schedule"] == "heuristic" and settings["num_assistant_tokens"] == 5
    assert settings["adaptive_threshold"] is False  # no confidence stop, nothing to adapt
    defaults = assistant_settings(load_model(folder), "assisted", same_vocabulary=True)
    assert defaults["adaptive_threshold"] is True  # transformers' defaults adapt when scikit-learn is there
    across = assistant_settings(load_model(folder), "uag", same_vocabulary=False)
    assert across["adaptive_threshold"] is False


def test_the_report_names_the_fastest_assisted_variant_per_temperature(tmp_path: Path) -> None:
    runs = [
        run(Configuration("transformers", "ar", 0.0), (0, 10, 5.0)),
        run(Configuration("transformers", "assisted", 0.0), (0, 10, 4.0)),
        run(Configuration("transformers", "assisted-adaptive", 0.0), (0, 10, 2.0)),
        run(Configuration("transformers", "assisted-heuristic", 0.0), (0, 10, 2.5)),
        run(Configuration("transformers", "lookup", 0.0), (0, 10, 1.0)),  # not an assisted variant
        run(Configuration("transformers", "uag-heuristic", 0.7), (0, 10, 5.0)),
    ]
    summaries = summarize(runs, same_kernels=False)
    [greedy, sampled] = best_assisted(summaries)
    assert (greedy.temperature, greedy.configuration) == (0.0, "transformers assisted-adaptive T=0")
    assert greedy.tokens_per_second == 5.0 and len(greedy.variants) == 3
    assert sampled.configuration == "transformers uag-heuristic T=0.7"
    options = BenchOptions(drafter="d", target="t", services=False)
    table = format_table(summaries, options)
    assert (
        "transformers' fastest assisted variant at T=0: transformers assisted-adaptive T=0 (5.00 tok/s"
        in table
    )
    document = build_document(options, {}, {}, summaries, "c", updated="u", complete=True)
    assert document["transformers_best_assisted"][0]["configuration"] == "transformers assisted-adaptive T=0"
