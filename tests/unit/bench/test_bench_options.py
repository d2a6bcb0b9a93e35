"""Bench options: what a run measures, validated before anything starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tools.bench.options import BenchOptions


def test_reference_only_runs_are_allowed_and_empty_runs_refused() -> None:
    options = BenchOptions(drafter="d", target="t", services=False)
    assert (options.services, options.reference) == (False, True)
    with pytest.raises(ValidationError, match="nothing to run"):
        BenchOptions(drafter="d", target="t", services=False, reference=False)


def test_algorithms_start_with_the_baseline() -> None:
    options = BenchOptions(drafter="d", target="t", algorithms=("slem", "ar", "tli", "slem"))
    assert options.algorithms == ("ar", "slem", "tli")


def test_the_drafter_precision_defaults_to_int8_and_is_checked() -> None:
    options = BenchOptions(drafter="d", target="t")
    assert (options.drafter_dtype, options.drafter_quantize) == ("bfloat16", "int8-weight-only")
    with pytest.raises(ValidationError, match="int8-dynamic computes in float32"):
        BenchOptions(drafter="d", target="t", drafter_quantize="int8-dynamic")
    bf16 = BenchOptions(
        drafter="d", target="t", drafter_dtype="bfloat16", drafter_quantize="int8-weight-only"
    )
    assert bf16.drafter_quantize == "int8-weight-only"
