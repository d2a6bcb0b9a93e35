"""The DISCO artifact: round trip, version, features and fingerprint checks, corrupt parts refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.disco.artifact import (
    SPEC_FILE,
    WEIGHTS_FILE,
    DiscoArtifactError,
    load_artifact,
    parse_artifact,
    write_artifact,
)
from tests.unit.disco.helpers import PAIR, artifact_of, random_mlp, token_prob_classifier


def test_round_trip_keeps_the_classifier_and_its_identity(tmp_path: Path) -> None:
    original = artifact_of(random_mlp(3, threshold=0.35))
    written = write_artifact(tmp_path / "a", original.spec_json, original.weights)
    loaded = load_artifact(tmp_path / "a")
    assert loaded.classifier_id == written.classifier_id == original.classifier_id
    assert loaded.pair == PAIR and loaded.regime == "greedy" and loaded.classifier.threshold == 0.35
    features = torch.rand(50, 6)
    assert torch.equal(
        loaded.classifier.continue_probs(features), original.classifier.continue_probs(features)
    )


def test_the_trained_draft_length_round_trips_and_an_older_spec_without_it_loads(tmp_path: Path) -> None:
    trained = artifact_of(token_prob_classifier(), trained_k=8)
    assert trained.trained_k == 8 and json.loads(trained.spec_json)["training"] == {"seed": 0, "k": 8}
    written = write_artifact(tmp_path / "a", trained.spec_json, trained.weights)
    assert written.trained_k == load_artifact(tmp_path / "a").trained_k == 8
    older = artifact_of(token_prob_classifier())  # written before training.k existed
    assert "k" not in json.loads(older.spec_json)["training"]
    write_artifact(tmp_path / "b", older.spec_json, older.weights)
    assert older.trained_k is None and load_artifact(tmp_path / "b").trained_k is None


@pytest.mark.parametrize("regime", ["greedy", "sampled", "slem"])
def test_every_label_regime_round_trips(regime: str, tmp_path: Path) -> None:
    original = artifact_of(token_prob_classifier(), regime=regime)
    write_artifact(tmp_path / "a", original.spec_json, original.weights)
    assert load_artifact(tmp_path / "a").regime == regime


def test_another_pair_is_refused_naming_the_model() -> None:
    artifact = artifact_of(token_prob_classifier())
    artifact.check_pair(PAIR.drafter, PAIR.target)
    with pytest.raises(DiscoArtifactError, match=r"trained for the target target .* fingerprint"):
        artifact.check_pair(PAIR.drafter, "x" * 32)
    with pytest.raises(DiscoArtifactError, match="drafter"):
        artifact.check_pair("y" * 32, PAIR.target)


def _spec_with(artifact_json: str, **changes: object) -> str:
    spec = json.loads(artifact_json)
    spec.update(changes)
    return json.dumps(spec)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 2}, "version 2 is not supported"),
        ({"format": "other"}, "not a polyspec-disco-classifier spec"),
        ({"features": {"names": ["token_prob"], "version": 1}}, "features"),
        ({"kind": "forest"}, "kind must be one of"),
        ({"kind": "mlp"}, "do not form a mlp classifier"),
        ({"threshold": 1.5}, "threshold must lie in"),
        ({"regime": "warm"}, "regime must be one of"),
        ({"pair": {"drafter_fingerprint": "", "target_fingerprint": "t"}}, "fingerprint"),
        ({"training": [8]}, "training must be a JSON object"),
        ({"training": {"k": 0}}, r"training.k \(the draft length .*\) must be a positive integer, got 0"),
        ({"training": {"k": -3}}, "training.k .* must be a positive integer, got -3"),
        ({"training": {"k": 2.5}}, "training.k .* must be a positive integer, got 2.5"),
        ({"training": {"k": "8"}}, "training.k .* must be a positive integer, got '8'"),
        ({"training": {"k": True}}, "training.k .* must be a positive integer, got True"),
    ],
)
def test_a_bad_spec_is_refused_saying_why(changes: dict[str, object], message: str) -> None:
    artifact = artifact_of(token_prob_classifier())
    with pytest.raises(DiscoArtifactError, match=message):
        parse_artifact(_spec_with(artifact.spec_json, **changes), artifact.weights)


def test_corrupt_files_are_refused_with_the_path(tmp_path: Path) -> None:
    artifact = artifact_of(token_prob_classifier())
    folder = tmp_path / "corrupt"
    write_artifact(folder, artifact.spec_json, artifact.weights)
    (folder / WEIGHTS_FILE).write_bytes(artifact.weights[: len(artifact.weights) // 2])
    with pytest.raises(DiscoArtifactError, match=f"{folder}: the weights are not a readable safetensors"):
        load_artifact(folder)
    (folder / WEIGHTS_FILE).write_bytes(artifact.weights)
    (folder / SPEC_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(DiscoArtifactError, match="the spec is not JSON"):
        load_artifact(folder)
    with pytest.raises(DiscoArtifactError, match="cannot read"):
        load_artifact(tmp_path / "missing")


def test_non_finite_weights_are_refused() -> None:
    classifier = token_prob_classifier()
    artifact = artifact_of(classifier)
    from core.disco.artifact import serialize_weights
    from core.disco.classifier import StopClassifier

    broken = dict(classifier.weights)
    broken["layer0.bias"] = torch.tensor([float("nan")])
    bad = StopClassifier(classifier.kind, broken, classifier.threshold)
    with pytest.raises(DiscoArtifactError, match="non-finite"):
        parse_artifact(artifact.spec_json, serialize_weights(bad))
