"""``polyspec disco calibrate``: an artifact's validation replays at several draft caps, exact on a greedy
collection's paths; the coordinator chooses plain ``disco``'s cap and threshold from them for its costs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.config import CoordinatorSettings
from coordinator.lookahead import CostModelLookahead
from coordinator.lookahead.costs import CostEstimates
from coordinator.lookahead.disco import StopClassifierRef
from coordinator.loop.plan import Regime, make_lookahead, tuned_classifier
from coordinator.request import AlgorithmName, LookaheadKind, LookaheadRequest
from core.disco.artifact import SPEC_FILE, load_artifact, parse_artifact
from core.disco.replay import path_scores, replay_path
from core.disco.thresholds import ThresholdReplay, best_setting, replayed_caps
from core.disco.training import THRESHOLDS, classifier_scorer
from tests.unit.disco.helpers import artifact_of, token_prob_classifier
from tests.unit.disco.test_disco_thresholds import observe
from tests.unit.disco.test_disco_train_command import train
from tests.unit.disco.test_disco_whatif import collection_file, paths
from tools.disco.calibrate import calibrated_spec, calibration_replays, default_caps
from tools.main import build_parser

SHORT = ThresholdReplay(0.5, 100, (0, 50))  # cap 2: 50 rounds of 2 tokens
LONG = ThresholdReplay(0.5, 60, (0, 0, 0, 25))  # cap 4: fewer rounds, fewer tokens


def test_the_cap_follows_the_costs_and_a_request_k_keeps_its_own() -> None:
    replays = (SHORT, LONG, ThresholdReplay(0.9, 10, (0, 0, 0, 25)))
    assert replayed_caps(replays) == (2, 4)

    def verify(cost: float) -> Callable[[int], float]:
        return lambda drafted: cost

    # a cheap drafter step against a dear verification: fewer rounds pay (60/25.1 > 100/50.1)
    assert best_setting(replays, 0.001, verify(1.0), max_cap=16) == (4, 0.5)
    # a dear drafter step against a cheap verification: shorter drafts pay (100/105 > 60/102.5)
    assert best_setting(replays, 1.0, verify(0.1), max_cap=16) == (2, 0.5)
    assert best_setting(replays, 0.001, verify(1.0), max_cap=3) == (2, 0.5)  # 4 is above the limit
    assert best_setting(replays, 0.001, verify(1.0), max_cap=1) == (2, 0.5)  # none below: the smallest
    assert best_setting(replays, 0.001, verify(1.0), max_cap=16, cap=3) == (2, 0.5)  # the table below K


def test_the_coordinator_chooses_plain_discos_cap_for_the_costs_it_measured() -> None:
    ref = StopClassifierRef("disco-x", 0.4, 2, (SHORT, LONG))
    settings = CoordinatorSettings(target_addresses=("127.0.0.1:1",))
    plain = LookaheadRequest(kind=LookaheadKind.DISCO, k=None, confidence_threshold=None)
    regime = Regime(AlgorithmName.SD, greedy=True)
    cold = tuned_classifier(ref, plain, settings, 64, CostEstimates())
    assert cold == ref and make_lookahead(
        plain, settings, 64, CostEstimates(), regime, classifier=cold
    ).describe() == (
        "disco:2"  # nothing measured yet: the trained draft length
    )
    estimates = CostEstimates()
    observe(estimates, step=0.001, verify=1.0, per_token=0.0)
    tuned = tuned_classifier(ref, plain, settings, 64, estimates)
    assert tuned is not None and (tuned.cap, tuned.threshold) == (4, 0.5)
    assert make_lookahead(plain, settings, 64, estimates, regime, classifier=tuned).describe() == "disco:4"
    limited = tuned_classifier(ref, plain, settings, 3, estimates)
    assert limited is not None and limited.cap == 2  # the drafter's own limit
    sampled = tuned_classifier(ref, plain, settings, 64, estimates, greedy=False)
    assert sampled is not None and sampled.cap == 2  # greedy replays beyond the trained length: not for it
    asked = LookaheadRequest(kind=LookaheadKind.DISCO, k=12, confidence_threshold=None)
    kept = tuned_classifier(ref, asked, settings, 64, estimates)
    assert kept is not None and kept.cap is None
    assert make_lookahead(asked, settings, 64, estimates, regime, classifier=kept).describe() == "disco:12"
    auto = LookaheadRequest(kind=LookaheadKind.AUTO, k=None, confidence_threshold=None)
    with_auto = tuned_classifier(ref, auto, settings, 64, estimates)
    policy = make_lookahead(auto, settings, 64, estimates, regime, classifier=with_auto)
    assert (
        isinstance(policy, CostModelLookahead) and policy.stop_classifier_k == 4
    )  # auto's paying rounds draft the chosen cap


def test_calibration_replays_each_cap_exactly() -> None:
    traced = paths(range(4))
    classifier = token_prob_classifier()
    artifact = artifact_of(classifier, trained_k=2)
    replays = calibration_replays(artifact, traced, 4, prompts=range(0, 4), caps=(4, 2, 3))
    assert replayed_caps(replays) == (2, 3, 4)
    assert len(replays) == 3 * len(THRESHOLDS)
    output = sum(len(path.matches) for path in traced)
    assert all(replay.tokens == output for replay in replays)  # every output token, at every cap
    for replay in replays:
        cap = len(replay.drafted)
        rounds = [
            item
            for path in traced
            for item in replay_path(
                path, path_scores(path, cap, classifier_scorer(classifier)), replay.threshold, cap
            )
        ]
        assert replay.drafted == tuple(sum(item.drafted == n for item in rounds) for n in range(1, cap + 1))


def test_calibration_refuses_what_it_cannot_replay_exactly() -> None:
    traced = paths(range(4))
    artifact = artifact_of(token_prob_classifier(), trained_k=2)
    with pytest.raises(ValueError, match=r"caps \[5\] are outside 1\.\.4.*collect with a larger --k"):
        calibration_replays(artifact, traced, 4, prompts=range(0, 4), caps=(2, 5))
    with pytest.raises(ValueError, match=r"no traced path for the validation prompts \[4, 5\]"):
        calibration_replays(artifact, traced, 4, prompts=range(0, 6), caps=(2,))
    slem = artifact_of(token_prob_classifier(), trained_k=2, regime="slem")
    with pytest.raises(ValueError, match="trained on slem labels"):
        calibration_replays(slem, traced, 4, prompts=range(0, 4), caps=(2,))
    assert (
        default_caps(2, 4) == (2, 3, 4) and default_caps(None, 3) == (1, 2, 3) and default_caps(6, 4) == (4,)
    )


def test_a_calibrated_artifact_keeps_its_weights_and_training() -> None:
    artifact = artifact_of(token_prob_classifier(), trained_k=2)
    spec = calibrated_spec(artifact, paths(range(4)), 4, prompts=range(0, 4), caps=(2, 4))
    calibrated = parse_artifact(spec, artifact.weights)
    assert replayed_caps(calibrated.threshold_replay) == (2, 4)
    assert calibrated.trained_k == 2 and calibrated.classifier.threshold == artifact.classifier.threshold
    document, before = json.loads(spec), json.loads(artifact.spec_json)
    assert document["calibration"] == {
        "caps": [2, 4],
        "validation_prompts": [0, 3],
        "collected_k": 4,
        "replay": "exact",
    }
    assert {key: document[key] for key in before} == before  # all else as trained


def calibrate_command(*argv: str) -> int:
    args = build_parser().parse_args(["disco", "calibrate", *argv])
    code: int = args.handler(args)
    return code


def test_the_command_rewrites_the_artifacts_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(collection_file(tmp_path / "greedy.json", 0.0))  # k = 4, prompts 0-5
    assert train([Path(data)], tmp_path / "artifact") == 0  # validation prompts 4-5, training.k 4
    folder = str(tmp_path / "artifact")
    capsys.readouterr()
    assert calibrate_command("--artifact", folder, "--data", data, "--validation-prompts", "4-5") == 0
    assert json.loads(capsys.readouterr().out)["caps"] == [4]  # from training.k to the collection's k
    out = str(tmp_path / "calibrated")
    argv = (
        "--artifact",
        folder,
        "--data",
        data,
        "--validation-prompts",
        "4-5",
        "--caps",
        "2,4",
        "--out",
        out,
    )
    assert calibrate_command(*argv) == 0
    assert replayed_caps(load_artifact(Path(out)).threshold_replay) == (2, 4)
    assert json.loads((Path(out) / SPEC_FILE).read_text(encoding="utf-8"))["calibration"]["caps"] == [2, 4]
    assert (Path(out) / "classifier.safetensors").read_bytes() == (
        Path(folder) / "classifier.safetensors"
    ).read_bytes()
    with pytest.raises(SystemExit, match=r"disco calibrate: caps \[6\] are outside 1\.\.4"):
        calibrate_command("--artifact", folder, "--data", data, "--validation-prompts", "4-5", "--caps", "6")
    with pytest.raises(SystemExit, match="disco calibrate: no traced path for the validation prompts"):
        calibrate_command("--artifact", folder, "--data", data)  # 100-119 by default
    sampled = str(collection_file(tmp_path / "sampled.json", 0.7))
    with pytest.raises(SystemExit, match=r"disco calibrate: .*hold no replay paths"):
        calibrate_command("--artifact", folder, "--data", sampled)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        calibrate_command("--artifact", folder, "--data", data, "--caps", "0")
    assert "argument --caps: draft caps must be positive integers, got '0'" in capsys.readouterr().err
