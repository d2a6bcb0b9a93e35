"""``disco`` over gRPC with toy services: the classifier loaded at start-up, registered once per drafter
replica (again when lost), named by every Draft; the greedy output unchanged; a wrong artifact refuses
start-up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from polyspec.v1 import common_pb2, coordinator_pb2

from coordinator.pair import PairMismatchError
from coordinator.server import CoordinatorServer, start_coordinator
from core.disco.artifact import WEIGHTS_FILE, PairFingerprint, write_artifact
from core.errors import InvalidArgumentError
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings
from tests.unit.disco.helpers import artifact_of, token_prob_classifier

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]
PAIR = PairFingerprint("toy-drafter", "toy-target", "drafter", "target")


def artifact_folder(tmp_path: Path, pair: PairFingerprint = PAIR) -> Path:
    artifact = artifact_of(token_prob_classifier(threshold=0.5), pair)
    folder = tmp_path / "disco"
    write_artifact(folder, artifact.spec_json, artifact.weights)
    return folder


def request(policy: coordinator_pb2.LookaheadPolicy.ValueType, k: int = 6) -> coordinator_pb2.GenerateRequest:
    return coordinator_pb2.GenerateRequest(
        prompt="alpha beta",
        max_new_tokens=16,
        sampling=common_pb2.SamplingParams(temperature=0.0),
        algorithm=common_pb2.ALGORITHM_SD,
        lookahead=coordinator_pb2.Lookahead(policy=policy, k=k),
        ignore_eos=True,
    )


async def start_pair(start_toy: StartToy) -> tuple[ToyServer, ToyServer]:
    target = await start_toy(word_lm(TARGET_SEED), model_name="target")
    drafter = await start_toy(word_lm(TARGET_SEED, noise=1.0), model_name="drafter")
    return target, drafter


async def test_disco_drafts_with_the_classifier_and_keeps_the_greedy_output(
    start_toy: StartToy, start_coord: StartCoord, channels: Any, tmp_path: Path
) -> None:
    target, drafter = await start_pair(start_toy)
    settings = coordinator_settings(target.address, drafter.address, disco_artifact=artifact_folder(tmp_path))
    server = await start_coord(settings)
    classifier = server.services.pair.stop_classifier
    assert classifier is not None
    stub = channels(server.port)
    reference = await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=1))
    disco = await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_DISCO))
    assert disco.stats.lookahead == "disco:6"
    assert list(disco.token_ids) == list(reference.token_ids)
    named = [c for c in drafter.state.draft_calls if c.stop_classifier_id]
    assert named and all(c.stop_classifier_id == classifier.classifier_id for c in named)
    assert any(c.max_draft_tokens == 6 for c in named)
    assert len(drafter.servicer.model.stop_classifiers) == 1
    drafter.servicer.model.stop_classifiers = type(drafter.servicer.model.stop_classifiers)(8)  # a restart
    again = await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_AUTO))
    assert list(again.token_ids) == list(reference.token_ids)
    assert len(drafter.servicer.model.stop_classifiers) == 1  # registered again on the miss


async def test_a_wrong_or_corrupt_artifact_refuses_start_up(start_toy: StartToy, tmp_path: Path) -> None:
    target, drafter = await start_pair(start_toy)
    other = artifact_folder(
        tmp_path / "other", PairFingerprint("toy-drafter", "toy-1.5b", "d", "other-target")
    )
    with pytest.raises(PairMismatchError, match="trained for the target other-target"):
        await start_coordinator(coordinator_settings(target.address, drafter.address, disco_artifact=other))
    corrupt = artifact_folder(tmp_path)
    (corrupt / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(InvalidArgumentError, match=r"disco_artifact: .* not a readable safetensors"):
        await start_coordinator(coordinator_settings(target.address, drafter.address, disco_artifact=corrupt))
