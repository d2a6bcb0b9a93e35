"""DISCO across vocabularies on tiny models: ``polyspec disco collect`` collects SLEM labels for a drafter
and a target with different tokenizers (greedy only), ``polyspec disco train`` writes a ``slem``
artifact, and a coordinator serving that pair loads it: ``disco`` and ``auto`` with the classifier give
the target's own greedy output for slem and tli requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from polyspec.v1 import common_pb2, coordinator_pb2

from core.disco.artifact import load_artifact
from tests.integration.real_services import Services
from tests.support.tiny_models import build_tiny_model
from tests.support.toy_tokenizers import byte_level_transformers, sentencepiece_transformers
from tools.main import main

PROMPTS = [
    "def fibonacci(n):\n",
    "def add(a, b):\n    return",
    "for index in range(10):\n",
    "class Tree:\n    def __init__(self, left, right):\n",
    "def mul(a, b):\n",
    "    if n < 2:\n        return n\n",
]


@pytest.fixture(scope="module")
def cross_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(target, drafter): tiny random models on a byte-level and a SentencePiece-style toy tokenizer."""
    root = tmp_path_factory.mktemp("disco-slem")
    target = build_tiny_model(byte_level_transformers(), root / "target", "llama", seed=1)
    drafter = build_tiny_model(sentencepiece_transformers(), root / "drafter", "llama", seed=2)
    return target, drafter


def _generate(prompt: str, algorithm: int, policy: int) -> coordinator_pb2.GenerateRequest:
    return coordinator_pb2.GenerateRequest(
        prompt=prompt,
        max_new_tokens=16,
        sampling=common_pb2.SamplingParams(temperature=0.0),
        algorithm=algorithm,  # type: ignore[arg-type]
        lookahead=coordinator_pb2.Lookahead(policy=policy, k=4),  # type: ignore[arg-type]
        ignore_eos=True,
    )


async def test_collect_train_and_serve_slem(
    cross_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target_dir, drafter_dir = cross_pair
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS), encoding="utf-8")
    rounds, out = tmp_path / "rounds.json", tmp_path / "artifact"
    common = ["--drafter-model", str(drafter_dir), "--target-model", str(target_dir)]
    collect = ["disco", "collect", *common, "--prompts-file", str(prompts), "--out", str(rounds)]
    with pytest.raises(SystemExit, match="greedy only: use --temperature 0"):
        main([*collect, "--k", "4", "--max-new-tokens", "4", "--temperature", "0.7"])
    assert main([*collect, "--k", "4", "--max-new-tokens", "12"]) == 0
    document = json.loads(rounds.read_text(encoding="utf-8"))
    assert document["regime"] == "slem" and document["rounds"]
    assert all(len(r["committed"]) == len(r["labels"]) for r in document["rounds"])
    train = ["disco", "train", "--data", str(rounds), "--out", str(out), "--epochs", "60"]
    assert main([*train, "--train-prompts", "0-3", "--validation-prompts", "4-5"]) == 0
    artifact = load_artifact(out)
    assert artifact.regime == "slem" and artifact.validation["rounds"] > 0
    capsys.readouterr()
    services = Services()
    try:
        target = await services.model(target_dir)
        drafter = await services.model(drafter_dir)
        stub = await services.coordinator(target, drafter, disco_artifact=out)
        reference = await stub.Generate(
            _generate(PROMPTS[4], common_pb2.ALGORITHM_AR, coordinator_pb2.LOOKAHEAD_POLICY_AUTO)
        )
        for algorithm in (common_pb2.ALGORITHM_SLEM, common_pb2.ALGORITHM_TLI):
            for policy in (coordinator_pb2.LOOKAHEAD_POLICY_DISCO, coordinator_pb2.LOOKAHEAD_POLICY_AUTO):
                response = await stub.Generate(_generate(PROMPTS[4], algorithm, policy))
                assert response.stats.algorithm == algorithm, response.stats.fallback_reason
                if policy == coordinator_pb2.LOOKAHEAD_POLICY_DISCO:  # auto may go target-only here
                    assert response.stats.lookahead.startswith("disco:4 stop<")
                    assert response.stats.draft_tokens > 0
                assert list(response.token_ids) == list(reference.token_ids), (algorithm, policy)
    finally:
        await services.close()
