"""`polyspec bench` end to end on a tiny random pair: services, transformers reference, JSON, PNG, table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.bench_cli import run_bench_cli
from tools.bench.records import Configuration
from tools.bench.report import FORMAT_VERSION, identity_reference

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REFUSAL_PREFIXES = ("INVALID_ARGUMENT: ", "FAILED_PRECONDITION: ", "UNIMPLEMENTED: ")
AGGREGATE_FIELDS = {
    "prompts", "output_tokens", "seconds", "tokens_per_second", "mean_tokens_per_second",
    "median_tokens_per_second", "median_seconds", "client_tokens_per_second",
    "mean_time_to_first_token_seconds", "median_time_to_first_token_seconds", "acceptance_rate",
    "mean_acceptance_rate", "draft_tokens_per_round", "tokens_per_target_forward", "bytes_per_round",
    "fallbacks", "emulated_latency", "algorithms_ran",
}  # fmt: skip
RECORD_FIELDS = {
    "prompt_index", "task_id", "output_tokens", "seconds", "tokens_per_second", "finish_reason", "token_ids",
    "time_to_first_token_seconds", "acceptance_rate", "target_forwards", "rounds", "bytes_sent",
    "bytes_received", "tokens_per_target_forward", "bytes_per_round", "fallback_reason", "emulated_latency",
    "identical_to_reference",
}  # fmt: skip


@pytest.fixture(scope="module")
def bench_run(
    tiny_llama_smollm2_vocab_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    """A small bench run (2 prompts, 4 tokens, greedy and T=0.7, drafter = target): its JSON and folder."""
    out_dir = tmp_path_factory.mktemp("bench")
    model = str(tiny_llama_smollm2_vocab_dir)
    code = run_bench_cli(
        ["--drafter", model, "--target", model, "--prompts", "2", "--prompt-offset", "3",
         "--max-new-tokens", "4", "--algorithms", "sd,tli", "--temperatures", "0,0.7",
         "--lookahead", "static:3", "--threads", "1", "--linear-kernel", "torch",
         "--lookup", "ngram", "--reference-methods", "ar,assisted,lookup",
         "--out", str(out_dir / "tiny.json"), "--log-dir", str(out_dir / "logs")]
    )  # fmt: skip
    assert code == 0
    return json.loads((out_dir / "tiny.json").read_text()), out_dir


def configurations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["label"]: entry for entry in document["configurations"]}


def test_bench_document_describes_machine_models_and_settings(bench_run: tuple[dict[str, Any], Path]) -> None:
    document, _ = bench_run
    assert document["format_version"] == FORMAT_VERSION == 2
    assert document["complete"] is True  # the last write; the ones after each prompt say false
    machine = document["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch_threads"] == 1
    assert machine["torch"] and machine["transformers"]
    for role in ("drafter", "target"):
        model = document["models"][role]
        assert model["name"] == "llama-smollm2-vocab"
        assert set(model["sha256"]) == {"model.safetensors"}
        assert all(len(digest) == 64 for digest in model["sha256"].values())
    settings = document["settings"]
    assert settings["algorithms"] == ["ar", "sd", "tli"]  # ar always runs first: the baseline
    assert settings["temperatures"] == [0.0, 0.7] and settings["prompt_offset"] == 3
    assert document["benchmarking_flags"] == []


def test_bench_measures_every_configuration(bench_run: tuple[dict[str, Any], Path]) -> None:
    by_label = configurations(bench_run[0])
    ran = [
        "services ar T=0", "services sd [static:3] T=0", "services ar T=0.7", "services sd [static:3] T=0.7",
        "services lookup [static:3] T=0", "services sd+lookup [static:3] T=0",
        "services lookup [static:3] T=0.7", "services sd+lookup [static:3] T=0.7",
        "transformers ar T=0", "transformers assisted T=0", "transformers lookup T=0",
        "transformers ar T=0.7", "transformers assisted T=0.7", "transformers lookup T=0.7",
    ]  # fmt: skip
    for label in ran:
        entry = by_label[label]
        assert entry["skipped"] is None
        assert set(entry["aggregate"]) == AGGREGATE_FIELDS
        assert entry["aggregate"]["prompts"] == 2
        assert [r["task_id"] for r in entry["records"]] == ["HumanEval/3", "HumanEval/4"]
        for record in entry["records"]:
            assert set(record) >= RECORD_FIELDS
            assert 1 <= record["output_tokens"] <= 4 and len(record["token_ids"]) == record["output_tokens"]
            assert record["tokens_per_second"] > 0
        assert entry["speedup_vs_services_ar"] > 0 and entry["speedup_vs_transformers_ar"] > 0
        assert entry["paired_speedup_vs_services_ar"] > 0 and entry["paired_speedup_vs_transformers_ar"] > 0
    for engine in ("services", "transformers"):
        for temperature in ("0", "0.7"):
            entry = by_label[f"{engine} ar T={temperature}"]
            assert entry[f"speedup_vs_{engine}_ar"] == entry[f"paired_speedup_vs_{engine}_ar"] == 1.0
    services_sd = by_label["services sd [static:3] T=0"]
    assert services_sd["aggregate"]["algorithms_ran"] == ["sd"]
    assert services_sd["aggregate"]["acceptance_rate"] == 1.0  # the drafter is the target
    assert services_sd["aggregate"]["bytes_per_round"] > 0
    assert services_sd["aggregate"]["tokens_per_target_forward"] > 1.0
    assert services_sd["aggregate"]["mean_time_to_first_token_seconds"] > 0


def test_bench_records_greedy_identity(bench_run: tuple[dict[str, Any], Path]) -> None:
    document = bench_run[0]
    by_label = configurations(document)
    services_sd = by_label["services sd [static:3] T=0"]["greedy_identity"]
    assert services_sd["reference"] == "services ar T=0"
    assert (services_sd["identical"], services_sd["compared"]) == (2, 2)  # lossless
    assert [r["identical_to_reference"] for r in by_label["services sd [static:3] T=0"]["records"]] == [
        True,
        True,
    ]
    assert by_label["transformers assisted T=0"]["greedy_identity"]["compared"] == 2
    # Same kernels (--linear-kernel torch): transformers' ar must equal the services' ar token for token.
    assert by_label["transformers ar T=0"]["greedy_identity"]["reference"] == "services ar T=0"
    assert by_label["services sd [static:3] T=0.7"]["greedy_identity"] is None  # sampling: no identity check
    for label in ("services lookup [static:3] T=0", "services sd+lookup [static:3] T=0"):
        assert by_label[label]["greedy_identity"]["identical"] == 2, label  # lossless with lookup drafts
    assert by_label["transformers lookup T=0"]["greedy_identity"]["compared"] == 2
    comparisons = {(c["configuration"], c["peer"]) for c in document["peer_comparisons"]}
    assert ("services sd+lookup [static:3] T=0", "transformers lookup T=0") in comparisons
    for comparison in document["peer_comparisons"]:
        assert 0 < comparison["low"] <= comparison["speedup"] <= comparison["high"]
    assert document["greedy_mismatches"] == []


def test_bench_records_a_refused_algorithm_as_skipped(bench_run: tuple[dict[str, Any], Path]) -> None:
    for temperature in ("0", "0.7"):
        entry = configurations(bench_run[0])[f"services tli [static:3] T={temperature}"]
        if entry["skipped"] is None:  # the coordinator runs tli for this pair: then it must be measured
            assert entry["aggregate"]["prompts"] == 2
        else:
            assert entry["skipped"].startswith(REFUSAL_PREFIXES) and entry["aggregate"] is None
            assert entry["records"] == []


def test_bench_writes_a_png_plot(bench_run: tuple[dict[str, Any], Path]) -> None:
    plot = bench_run[1] / "tiny.png"
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert sorted(path.name for path in bench_run[1].iterdir()) == ["logs", "tiny.json", "tiny.png"]
    assert plot.stat().st_size > 10_000


def test_bench_refuses_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_bench_cli(["--drafter", "x", "--target", "y", "--prompts", "200", "--lookahead", "sometimes"])
    assert code == 2
    err = capsys.readouterr().err
    assert "prompts" in err and "lookahead" in err


def test_engines_are_compared_token_for_token_only_with_the_same_kernels() -> None:
    transformers_ar = Configuration("transformers", "ar", 0.0)
    assert identity_reference(transformers_ar, same_kernels=True) == Configuration("services", "ar", 0.0)
    assert identity_reference(transformers_ar, same_kernels=False) is None
    assisted = Configuration("transformers", "assisted", 0.0)
    assert identity_reference(assisted, same_kernels=False) == transformers_ar
    services_sd = Configuration("services", "sd", 0.0, "auto")
    assert identity_reference(services_sd, same_kernels=False) == Configuration("services", "ar", 0.0)
    assert identity_reference(Configuration("services", "sd", 0.7, "auto"), same_kernels=True) is None
