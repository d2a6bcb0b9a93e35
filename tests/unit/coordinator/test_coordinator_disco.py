"""``disco`` over gRPC with toy services: the classifier loaded at start-up, registered once per drafter
replica (again when lost), named by every Draft; the greedy output unchanged; a wrong artifact refuses
start-up; ``disco_artifact=auto`` loads the artifact trained for the pair served from an artifact folder,
or runs without a classifier when there is none."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from polyspec.v1 import common_pb2, coordinator_pb2
from structlog.testing import capture_logs

from coordinator import server as coordinator_server
from coordinator.config import SHIPPED_DISCO_ARTIFACTS
from coordinator.pair import PairMismatchError
from coordinator.server import CoordinatorServer, start_coordinator
from core.disco.artifact import SPEC_FILE, WEIGHTS_FILE, PairFingerprint, load_artifact, write_artifact
from core.errors import InvalidArgumentError
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings
from tests.unit.disco.helpers import artifact_of, token_prob_classifier

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]
PAIR = PairFingerprint("toy-drafter", "toy-target", "drafter", "target")


OTHER_PAIR = PairFingerprint("toy-drafter", "toy-1.5b", "d", "other-target")


def artifact_folder(
    tmp_path: Path, pair: PairFingerprint = PAIR, name: str = "disco", trained_k: int | None = None
) -> Path:
    artifact = artifact_of(token_prob_classifier(threshold=0.5), pair, trained_k)
    folder = tmp_path / name
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
    assert disco.stats.lookahead == "disco:6 stop<0.50"
    assert list(disco.token_ids) == list(reference.token_ids)
    named = [c for c in drafter.state.draft_calls if c.stop_classifier_id]
    assert named and all(c.stop_classifier_id == classifier.classifier_id for c in named)
    assert any(c.max_draft_tokens == 6 for c in named)
    assert len(drafter.servicer.model.stop_classifiers) == 1
    drafter.servicer.model.stop_classifiers = type(drafter.servicer.model.stop_classifiers)(8)  # a restart
    again = await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_AUTO))
    assert list(again.token_ids) == list(reference.token_ids)
    assert len(drafter.servicer.model.stop_classifiers) == 1  # registered again on the miss


@pytest.mark.usefixtures("fresh_logging")
async def test_plain_disco_drafts_at_most_the_trained_draft_length_and_disco_k_overrides_it(
    start_toy: StartToy, start_coord: StartCoord, channels: Any, tmp_path: Path
) -> None:
    target, drafter = await start_pair(start_toy)
    folder = artifact_folder(tmp_path, trained_k=3)
    with capture_logs() as logs:
        server = await start_coord(
            coordinator_settings(target.address, drafter.address, disco_artifact=folder)
        )
    (loaded,) = [line for line in logs if line["event"] == "stop_classifier_loaded"]
    assert (loaded["trained_k"], loaded["disco_default_k"]) == (3, 3)
    stub = channels(server.port)
    reference = await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=1))
    drafter.state.draft_calls.clear()
    plain = await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_DISCO, k=0))
    assert plain.stats.lookahead == "disco:3 stop<0.50"
    assert list(plain.token_ids) == list(reference.token_ids)
    asked = [c.max_draft_tokens for c in drafter.state.draft_calls if c.stop_classifier_id]
    assert asked and max(asked) == 3  # the max_lookahead_k of 16 is never asked for
    assert 0 < plain.stats.draft_tokens <= 3 * plain.stats.rounds
    drafter.state.draft_calls.clear()
    explicit = await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_DISCO, k=6))
    assert explicit.stats.lookahead == "disco:6 stop<0.50"
    assert list(explicit.token_ids) == list(reference.token_ids)
    assert max(c.max_draft_tokens for c in drafter.state.draft_calls if c.stop_classifier_id) == 6


async def test_a_wrong_or_corrupt_artifact_refuses_start_up(start_toy: StartToy, tmp_path: Path) -> None:
    target, drafter = await start_pair(start_toy)
    other = artifact_folder(tmp_path / "other", OTHER_PAIR)
    with pytest.raises(PairMismatchError, match="trained for the target other-target"):
        await start_coordinator(coordinator_settings(target.address, drafter.address, disco_artifact=other))
    corrupt = artifact_folder(tmp_path)
    (corrupt / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(InvalidArgumentError, match=r"disco_artifact: .* not a readable safetensors"):
        await start_coordinator(coordinator_settings(target.address, drafter.address, disco_artifact=corrupt))


async def test_auto_loads_the_artifact_trained_for_the_pair_from_the_artifact_dir(
    start_toy: StartToy, start_coord: StartCoord, channels: Any, tmp_path: Path
) -> None:
    target, drafter = await start_pair(start_toy)
    root = tmp_path / "artifacts"
    artifact_folder(root, OTHER_PAIR, name="drafter__target")  # named like the pair, trained for another
    mine = artifact_folder(root, PAIR, name="some-other-name")
    settings = coordinator_settings(
        target.address, drafter.address, disco_artifact="auto", disco_artifact_dir=root
    )
    server = await start_coord(settings)
    classifier = server.services.pair.stop_classifier
    assert classifier is not None
    assert classifier.classifier_id == load_artifact(mine).classifier_id
    stub = channels(server.port)
    reference = await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=1))
    disco = await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_DISCO))
    assert disco.stats.lookahead == "disco:6 stop<0.50"
    assert list(disco.token_ids) == list(reference.token_ids)
    named = [c for c in drafter.state.draft_calls if c.stop_classifier_id]
    assert named and all(c.stop_classifier_id == classifier.classifier_id for c in named)


@pytest.fixture
def fresh_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """structlog at its defaults with an uncached module logger: an in-process CLI run earlier in the
    session configures WARNING-level, cached loggers, which capture_logs would not see."""
    structlog.reset_defaults()
    monkeypatch.setattr(coordinator_server, "log", structlog.get_logger(coordinator_server.__name__))
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("fresh_logging")
async def test_auto_without_an_artifact_for_the_pair_runs_without_a_classifier(
    start_toy: StartToy, start_coord: StartCoord, channels: Any, tmp_path: Path
) -> None:
    target, drafter = await start_pair(start_toy)
    root = tmp_path / "artifacts"
    artifact_folder(root, OTHER_PAIR, name="drafter__target")
    settings = coordinator_settings(
        target.address, drafter.address, disco_artifact="auto", disco_artifact_dir=root
    )
    with capture_logs() as logs:
        server = await start_coord(settings)
    assert server.services.pair.stop_classifier is None and server.services.stop_classifiers is None
    (none,) = [line for line in logs if line["event"] == "stop_classifier_none"]
    assert none["log_level"] == "info" and none["searched"] == str(root)
    assert (none["drafter_model_fingerprint"], none["target_model_fingerprint"]) == (
        "toy-drafter",
        "toy-target",
    )
    assert "(drafter)" in none["drafter"] and "(target)" in none["target"]
    stub = channels(server.port)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_DISCO))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "disco needs a trained classifier and this coordinator has none" in str(info.value.details())
    answer = await stub.Generate(request(coordinator_pb2.LOOKAHEAD_POLICY_AUTO))
    assert len(answer.token_ids) == 16
    assert not any(c.stop_classifier_id for c in drafter.state.draft_calls)


@pytest.mark.usefixtures("fresh_logging")
async def test_auto_searches_the_shipped_artifacts_without_an_artifact_dir(
    start_toy: StartToy, start_coord: StartCoord
) -> None:
    target, drafter = await start_pair(start_toy)
    settings = coordinator_settings(target.address, drafter.address, disco_artifact="auto")
    with capture_logs() as logs:
        server = await start_coord(settings)
    assert server.services.pair.stop_classifier is None  # nothing shipped is trained for toy models
    (none,) = [line for line in logs if line["event"] == "stop_classifier_none"]
    assert none["searched"] == str(SHIPPED_DISCO_ARTIFACTS)


async def test_auto_refuses_start_up_on_a_corrupt_spec_or_a_missing_artifact_dir(
    start_toy: StartToy, tmp_path: Path
) -> None:
    target, drafter = await start_pair(start_toy)
    root = tmp_path / "artifacts"
    artifact_folder(root, PAIR, name="good")
    corrupt = artifact_folder(root, OTHER_PAIR, name="corrupt")
    (corrupt / SPEC_FILE).write_text("{not json", encoding="utf-8")
    cases = ((root, f"{corrupt}: the spec is not JSON"), (tmp_path / "nowhere", "cannot list"))
    for folder, message in cases:
        settings = coordinator_settings(
            target.address, drafter.address, disco_artifact="auto", disco_artifact_dir=folder
        )
        with pytest.raises(InvalidArgumentError, match=f"disco_artifact_dir: .*{message}"):
            await start_coordinator(settings)
