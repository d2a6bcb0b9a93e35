"""The bench's description of the stop classifier it served: the trained draft length included."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.disco.artifact import SPEC_FILE, WEIGHTS_FILE, write_artifact
from tests.unit.disco.helpers import artifact_of, token_prob_classifier
from tools.bench.describe import describe_disco_artifact


@pytest.mark.parametrize("trained_k", [8, None])
def test_the_description_names_the_trained_draft_length(tmp_path: Path, trained_k: int | None) -> None:
    artifact = artifact_of(token_prob_classifier(threshold=0.4), trained_k=trained_k)
    write_artifact(tmp_path, artifact.spec_json, artifact.weights)
    described = describe_disco_artifact(tmp_path)
    assert described["trained_k"] == trained_k  # None: an artifact written before training.k existed
    assert (described["kind"], described["threshold"], described["regime"]) == ("logistic", 0.4, "greedy")
    assert set(described["sha256"]) == {SPEC_FILE, WEIGHTS_FILE}
