"""`polyspec bench --lookahead auto,disco,auto+disco --disco-artifact DIR` on a tiny word-level pair.

``polyspec disco collect`` and ``polyspec disco train`` make the artifact (as in
tests/integration/test_disco_tiny.py); the bench then serves ``disco`` and ``auto+disco`` on a second
coordinator that loads it, plain ``auto`` on the first, and runs transformers' adaptive-threshold
assisted generation as the reference. No downloaded model: the pair is built here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.bench_cli import run_bench_cli
from tests.support.tiny_models import build_word_model
from tools.main import main

pytestmark = [pytest.mark.slow]

COLLECT_PROMPTS = [" ".join(f"w{(7 * i + j) % 250}" for j in range(6)) for i in range(8)]
# HumanEval/23 and /24 are short under the word-level tokenizer (27 and 36 tokens; the context is 128).
PROMPT_OFFSET = 23


def train_artifact(drafter: Path, target: Path, root: Path) -> Path:
    prompts = root / "prompts.json"
    prompts.write_text(json.dumps(COLLECT_PROMPTS), encoding="utf-8")
    rounds, artifact = root / "rounds.json", root / "artifact"
    models = ["--drafter-model", str(drafter), "--target-model", str(target)]
    collect = ["disco", "collect", *models, "--prompts-file", str(prompts), "--out", str(rounds)]
    assert main([*collect, "--k", "4", "--max-new-tokens", "12"]) == 0
    train = ["disco", "train", "--data", str(rounds), "--out", str(artifact), "--epochs", "60"]
    assert main([*train, "--train-prompts", "0-5", "--validation-prompts", "6-7"]) == 0
    return artifact


@pytest.fixture(scope="module")
def disco_bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    root = tmp_path_factory.mktemp("bench-disco")
    target = build_word_model(root / "target", "llama", seed=1)
    drafter = build_word_model(root / "drafter", "llama", seed=2)
    artifact = train_artifact(drafter, target, root)
    out = root / "disco.json"
    code = run_bench_cli(
        ["--drafter", str(drafter), "--target", str(target), "--prompts", "2",
         "--prompt-offset", str(PROMPT_OFFSET), "--max-new-tokens", "12", "--algorithms", "sd",
         "--temperatures", "0", "--lookahead", "auto,disco,auto+disco", "--disco-artifact", str(artifact),
         "--threads", "1", "--linear-kernel", "torch", "--drafter-dtype", "float32",
         "--drafter-quantize", "none", "--reference-methods", "ar,assisted-adaptive",
         "--out", str(out), "--log-dir", str(root / "logs")]
    )  # fmt: skip
    assert code == 0
    return json.loads(out.read_text()), str(artifact)


def by_label(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["label"]: entry for entry in document["configurations"]}


def test_disco_and_auto_with_the_classifier_are_measured_and_lossless(
    disco_bench: tuple[dict[str, Any], str],
) -> None:
    document, artifact = disco_bench
    entries = by_label(document)
    for label in ("services sd [disco] T=0", "services sd [auto+disco] T=0", "services sd [auto] T=0"):
        entry = entries[label]
        assert entry["skipped"] is None, entry["skipped"]
        assert entry["aggregate"]["prompts"] == 2 and entry["aggregate"]["tokens_per_second"] > 0
        assert entry["aggregate"]["algorithms_ran"] == ["sd"]
        # The mean draft length of the variant: disco always drafts; auto's cost model may take target-only
        # steps on this tiny pair (drafter and target cost about the same), which depends on timing.
        assert entry["aggregate"]["draft_tokens_per_round"] > (0 if "[disco]" in label else -1)
        identity = entry["greedy_identity"]
        assert identity["reference"] == "services ar T=0"
        assert identity["identical"] == identity["compared"] == 2, "greedy output equals ar's"
    assert document["greedy_mismatches"] == []
    assert document["settings"]["disco_artifact"] == artifact
    described = document["models"]["disco_artifact"]
    assert described["folder"] == artifact and described["regime"] == "greedy"
    assert described["trained_k"] == 4  # collected with --k 4: plain disco drafts at most 4
    assert set(described["sha256"]) == {"classifier.json", "classifier.safetensors"}


def test_the_reference_runs_transformers_adaptive_threshold_and_names_the_best_variant(
    disco_bench: tuple[dict[str, Any], str],
) -> None:
    document, _ = disco_bench
    adaptive = by_label(document)["transformers assisted-adaptive T=0"]
    assert adaptive["skipped"] is None and adaptive["aggregate"]["tokens_per_second"] > 0
    assert adaptive["settings"]["adaptive_threshold"] is True  # scikit-learn is in the bench extra
    assert adaptive["settings"]["num_assistant_tokens_schedule"] == "constant"
    [best] = document["transformers_best_assisted"]
    assert best["configuration"] == "transformers assisted-adaptive T=0" and best["temperature"] == 0.0
