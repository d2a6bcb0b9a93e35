"""DISCO end to end on tiny models: ``polyspec disco collect`` -> ``polyspec disco train`` -> a coordinator
serving ``disco`` with the artifact, its greedy output the target's own; the engine's serving and
collection features agree; Info's model fingerprint tells two models of one tokenizer apart."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from polyspec.v1 import common_pb2, coordinator_pb2

from core.disco.artifact import load_artifact
from core.modelcalls import ContextRef, DraftCall
from core.sampling import SamplingConfig
from services.model.engine import ModelEngine
from services.model.settings import ModelServiceSettings
from tests.integration.real_services import Services
from tests.support.tiny_models import build_word_model
from tools.main import main

PROMPTS = [" ".join(f"w{(7 * i + j) % 250}" for j in range(6)) for i in range(8)]


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("disco")
    return build_word_model(root / "target", "llama", seed=1), build_word_model(
        root / "drafter", "llama", seed=2
    )


def test_engine_features_and_fingerprints(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    target_dir, drafter_dir = tiny_pair
    drafter = ModelEngine.load(ModelServiceSettings(model_dir=drafter_dir))
    target = ModelEngine.load(ModelServiceSettings(model_dir=target_dir))
    assert drafter.info.tokenizer_fingerprint == target.info.tokenizer_fingerprint
    assert drafter.info.model_fingerprint != target.info.model_fingerprint
    again = ModelEngine.load(ModelServiceSettings(model_dir=drafter_dir, dtype="bfloat16"))
    assert again.info.model_fingerprint == drafter.info.model_fingerprint  # the precision does not matter
    from tests.unit.disco.helpers import artifact_of, token_prob_classifier

    artifact = artifact_of(token_prob_classifier(threshold=0.3))
    drafter.set_stop_classifier("c", artifact.spec_json, artifact.weights)
    context = ContextRef.whole("s", (3, 10, 11, 12))
    call = DraftCall(context, 8, SamplingConfig(0.0), seed=1, return_features=True)
    collected = drafter.draft(call)
    # a fresh sequence: the same forwards from scratch (a cached prefix may round differently)
    served = drafter.draft(replace(call, context=replace(context, sequence_id="t"), stop_classifier_id="c"))
    cut = len(served.draft_tokens)
    assert served.draft_tokens == collected.draft_tokens[:cut]
    assert served.features == collected.features[:cut]  # the features the stop judged, as collected
    assert cut == len(collected.draft_tokens) or collected.features[cut - 1][0] < 0.5


async def test_collect_train_and_serve_disco(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    target_dir, drafter_dir = tiny_pair
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS), encoding="utf-8")
    rounds, out = tmp_path / "rounds.json", tmp_path / "artifact"
    common = ["--drafter-model", str(drafter_dir), "--target-model", str(target_dir)]
    collect = ["disco", "collect", *common, "--prompts-file", str(prompts), "--out", str(rounds)]
    assert main([*collect, "--k", "4", "--max-new-tokens", "12"]) == 0
    train = ["disco", "train", "--data", str(rounds), "--out", str(out), "--epochs", "60"]
    assert main([*train, "--train-prompts", "0-5", "--validation-prompts", "6-7"]) == 0
    artifact = load_artifact(out)
    assert artifact.regime == "greedy" and artifact.validation["rounds"] > 0
    assert artifact.trained_k == 4  # collected with --k 4
    services = Services()
    try:
        target = await services.model(target_dir)
        drafter = await services.model(drafter_dir)
        stub = await services.coordinator(target, drafter, disco_artifact=out)
        outputs = {}
        for policy in (coordinator_pb2.LOOKAHEAD_POLICY_DISCO, coordinator_pb2.LOOKAHEAD_POLICY_AUTO):
            response = await stub.Generate(
                coordinator_pb2.GenerateRequest(
                    prompt=PROMPTS[6],
                    max_new_tokens=16,
                    sampling=common_pb2.SamplingParams(temperature=0.0),
                    lookahead=coordinator_pb2.Lookahead(policy=policy, k=4),
                    ignore_eos=True,
                )
            )
            outputs[policy] = list(response.token_ids)
        reference = await stub.Generate(
            coordinator_pb2.GenerateRequest(
                prompt=PROMPTS[6],
                max_new_tokens=16,
                sampling=common_pb2.SamplingParams(temperature=0.0),
                algorithm=common_pb2.ALGORITHM_AR,
                ignore_eos=True,
            )
        )
        assert set(map(tuple, outputs.values())) == {tuple(reference.token_ids)}
    finally:
        await services.close()
