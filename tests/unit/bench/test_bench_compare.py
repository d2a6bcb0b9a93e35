"""Paired speedups over transformers' peers with bootstrap intervals; the rewrite workload's prompts."""

from __future__ import annotations

import math

import pytest

from tests.unit.bench.records import run
from tools.bench.compare import compare, format_comparisons, peer_comparisons
from tools.bench.options import BenchOptions
from tools.bench.prompts import REWRITE_REQUEST, load_prompts, rewrite_prompt
from tools.bench.records import Configuration
from tools.bench.reference import reference_configurations

SD = Configuration("services", "sd", 0.0, "auto")
SD_SAMPLED = Configuration("services", "sd", 0.7, "auto")
HF_ASSISTED = Configuration("transformers", "assisted", 0.0)
HF_LOOKUP = Configuration("transformers", "lookup", 0.0)


def test_a_constant_speedup_has_a_point_interval() -> None:
    ours = run(SD, (0, 10, 1.0), (1, 20, 2.0), (2, 5, 0.5))
    peer = run(HF_ASSISTED, (0, 10, 2.0), (1, 20, 4.0), (2, 5, 1.0))
    result = compare(ours, peer)
    assert result is not None and result.prompts == 3
    assert result.speedup == pytest.approx(2.0) and result.low == pytest.approx(2.0)
    assert result.high == pytest.approx(2.0)


def test_the_interval_brackets_the_geometric_mean_and_widens_with_spread() -> None:
    peer = run(HF_LOOKUP, *((i, 10, 1.0) for i in range(8)))
    tight = run(SD, *((i, 10, 1.0 / (2.0 + 0.01 * (i % 2))) for i in range(8)))
    loose = run(SD, *((i, 10, 1.0 / (2.0 + 1.5 * (i % 2))) for i in range(8)))
    narrow, wide = compare(tight, peer), compare(loose, peer)
    assert narrow is not None and wide is not None
    for result in (narrow, wide):
        assert result.low <= result.speedup <= result.high
    assert wide.high - wide.low > narrow.high - narrow.low
    expected = math.exp(sum(math.log(2.0 + 1.5 * (i % 2)) for i in range(8)) / 8)
    assert wide.speedup == pytest.approx(expected)
    assert compare(loose, peer) == wide  # seeded: the same interval every time


def test_peers_are_compared_at_the_same_temperature_only() -> None:
    runs = [
        run(SD, (0, 10, 1.0)),
        run(SD_SAMPLED, (0, 10, 1.0)),
        run(HF_ASSISTED, (0, 10, 2.0)),
        run(HF_LOOKUP, (0, 10, 3.0)),
    ]
    pairs = {(c.configuration, c.peer) for c in peer_comparisons(runs)}
    assert pairs == {(SD.label, HF_ASSISTED.label), (SD.label, HF_LOOKUP.label)}
    text = format_comparisons(peer_comparisons(runs))
    assert "over transformers lookup T=0: 3.00x [3.00, 3.00] (1 prompts)" in text


def test_reference_methods_map_to_transformers_configurations() -> None:
    options = BenchOptions(
        drafter="d", target="t", temperatures=(0.0, 0.7), reference_methods=("lookup", "assisted")
    )
    assert options.reference_methods == ("ar", "lookup", "assisted")
    cross = [c.method for c in reference_configurations(options, same_vocabulary=False)]
    assert cross == ["ar", "lookup", "uag"] * 2


def test_rewrite_prompts_hold_the_whole_function_and_ask_for_it_again() -> None:
    prompts = load_prompts(0, 3, "rewrite")
    completions = load_prompts(0, 3, "humaneval")
    for rewrite, completion in zip(prompts, completions, strict=True):
        assert rewrite.task_id == completion.task_id
        assert rewrite.text.startswith(completion.text)  # the task's prompt, then its canonical solution
        head, request, tail = rewrite.text.partition(REWRITE_REQUEST)
        assert request and tail.startswith("def ") and tail.endswith("\n")
        assert tail.strip() in head  # the def line to continue is the function's own
    problem = {"prompt": "x = 1\n", "canonical_solution": "", "entry_point": "missing"}
    assert rewrite_prompt(problem).endswith(REWRITE_REQUEST + "def missing(\n")
