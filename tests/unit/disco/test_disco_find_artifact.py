"""Finding the artifact of a drafter/target pair among artifact folders, by the fingerprints in the specs;
the artifacts shipped in the package, and their packaging."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

from coordinator.config import SHIPPED_DISCO_ARTIFACTS
from core.disco.artifact import (
    SPEC_FILE,
    WEIGHTS_FILE,
    DiscoArtifactError,
    PairFingerprint,
    build_spec,
    find_artifact,
    load_artifact,
    parse_artifact,
    recalibrated_spec,
    write_artifact,
)
from core.disco.thresholds import replayed_caps
from services.modelstore.registry import model_names
from tests.unit.disco.helpers import PAIR, artifact_of, random_mlp

OTHER = PairFingerprint(PAIR.drafter, "o" * 32, "drafter", "other-target")
REPOSITORY = Path(__file__).resolve().parents[3]


def write(folder: Path, pair: PairFingerprint = PAIR, seed: int = 0) -> Path:
    artifact = artifact_of(random_mlp(seed), pair)
    write_artifact(folder, artifact.spec_json, artifact.weights)
    return folder


def test_the_folder_trained_for_the_pair_is_found_whatever_its_name(tmp_path: Path) -> None:
    mine = write(tmp_path / "zz-not-the-pair-name", PAIR)
    other = write(tmp_path / "drafter__target", OTHER)
    (tmp_path / "notes").mkdir()  # no spec: skipped
    (tmp_path / "notes" / "README.md").write_text("work in progress\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("a file, not a folder\n", encoding="utf-8")
    assert find_artifact(tmp_path, PAIR.drafter, PAIR.target) == mine
    assert find_artifact(tmp_path, OTHER.drafter, OTHER.target) == other
    assert find_artifact(tmp_path, PAIR.target, PAIR.drafter) is None  # the roles matter
    assert find_artifact(tmp_path, PAIR.drafter, "x" * 32) is None
    assert find_artifact(tmp_path / "notes", PAIR.drafter, PAIR.target) is None


def test_only_the_specs_are_read(tmp_path: Path) -> None:
    folder = write(tmp_path / "a", PAIR)
    (folder / WEIGHTS_FILE).write_bytes(b"not weights")
    assert find_artifact(tmp_path, PAIR.drafter, PAIR.target) == folder
    with pytest.raises(DiscoArtifactError, match="not a readable safetensors"):
        load_artifact(folder)  # loading the found folder is what checks the weights


def test_two_artifacts_for_one_pair_are_an_error_naming_both(tmp_path: Path) -> None:
    first, second = write(tmp_path / "a", PAIR, seed=1), write(tmp_path / "b", PAIR, seed=2)
    write(tmp_path / "c", OTHER)
    with pytest.raises(DiscoArtifactError, match="2 stop-classifier artifacts") as info:
        find_artifact(tmp_path, PAIR.drafter, PAIR.target)
    assert str(first) in str(info.value) and str(second) in str(info.value)
    assert find_artifact(tmp_path, OTHER.drafter, OTHER.target) == tmp_path / "c"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{not json", "the spec is not JSON"),
        ('{"format": "other"}', "not a polyspec-disco-classifier spec"),
        (b"\xff\xfe", "cannot read the stop-classifier spec"),
    ],
)
def test_a_corrupt_spec_met_while_scanning_is_an_error_naming_its_folder(
    tmp_path: Path, spec: str | bytes, message: str
) -> None:
    write(tmp_path / "a", PAIR)
    corrupt = tmp_path / "b"
    corrupt.mkdir()
    if isinstance(spec, bytes):
        (corrupt / SPEC_FILE).write_bytes(spec)
    else:
        (corrupt / SPEC_FILE).write_text(spec, encoding="utf-8")
    with pytest.raises(DiscoArtifactError, match=f"{corrupt}: .*{message}"):
        find_artifact(tmp_path, PAIR.drafter, PAIR.target)


def test_a_missing_root_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DiscoArtifactError, match=f"{tmp_path / 'missing'}: cannot list"):
        find_artifact(tmp_path / "missing", PAIR.drafter, PAIR.target)


def test_the_shipped_artifacts_load_and_are_named_after_their_pair() -> None:
    """Each shipped folder holds a readable artifact, named <drafter>__<target> after registry models, and
    is the one found for its own pair (no two for one pair)."""
    assert (SHIPPED_DISCO_ARTIFACTS / "README.md").is_file()
    for folder in sorted(p for p in SHIPPED_DISCO_ARTIFACTS.iterdir() if p.is_dir()):
        drafter, _, target = folder.name.partition("__")
        assert {drafter, target} <= set(model_names()), folder.name
        artifact = load_artifact(folder)
        assert find_artifact(SHIPPED_DISCO_ARTIFACTS, artifact.pair.drafter, artifact.pair.target) == folder


def test_the_shipped_artifacts_record_their_trained_draft_length_as_train_writes_it() -> None:
    """Each shipped spec records the collection's k and each threshold's validation replay, and is byte
    for byte what ``build_spec`` writes (then ``disco calibrate``, where it says so); the Qwen2.5-Coder
    pair's was collected with --k 8 and calibrated at caps 8-16."""
    for folder in sorted(p for p in SHIPPED_DISCO_ARTIFACTS.iterdir() if p.is_dir()):
        artifact = load_artifact(folder)
        assert artifact.trained_k is not None, folder.name
        training = json.loads(artifact.spec_json)["training"]
        assert training["k"] == artifact.trained_k
        assert len(artifact.threshold_replay) > 1, f"{folder.name}: no validation replay per threshold"
        parts = (artifact.classifier, artifact.pair, artifact.regime, artifact.validation)
        rebuilt = build_spec(*parts, training, threshold_replay=artifact.threshold_replay)
        calibration = json.loads(artifact.spec_json).get("calibration")
        if calibration is not None:  # what `disco calibrate` writes from what train wrote
            trained = parse_artifact(rebuilt, artifact.weights)
            rebuilt = recalibrated_spec(trained, artifact.threshold_replay, calibration)
            assert list(replayed_caps(artifact.threshold_replay)) == calibration["caps"], folder.name
        assert rebuilt == artifact.spec_json, folder.name
        assert (folder / SPEC_FILE).read_text(encoding="utf-8") == rebuilt + "\n"
    qwen = load_artifact(SHIPPED_DISCO_ARTIFACTS / "qwen2.5-coder-0.5b__qwen2.5-coder-1.5b")
    assert qwen.trained_k == 8
    assert replayed_caps(qwen.threshold_replay) == tuple(range(8, 17)), "calibrated at caps 8-16"
    across = load_artifact(SHIPPED_DISCO_ARTIFACTS / "smollm2-135m__qwen2.5-coder-1.5b")
    assert (across.regime, across.trained_k) == ("slem", 8), "SLEM labels across the two vocabularies"


def test_the_package_data_carries_the_shipped_artifacts() -> None:
    """A wheel (and so the image) holds the README and every pair's two files."""
    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["coordinator"]
    assert SHIPPED_DISCO_ARTIFACTS == REPOSITORY / "coordinator" / "disco_artifacts"
    for member in ("README.md", f"a__b/{SPEC_FILE}", f"a__b/{WEIGHTS_FILE}"):
        path = f"disco_artifacts/{member}"
        assert any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns), path
