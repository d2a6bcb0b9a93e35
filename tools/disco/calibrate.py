"""``polyspec disco calibrate``: an artifact's validation replays at the draft caps a deployment may run.

``train`` replays the chosen classifier at every threshold on the validation prompts, at the draft length
its rounds were collected with (``training.k``), and the coordinator picks the threshold for the costs
it measures (``core.disco.thresholds``). A longer cap can pay: where the drafter is right in long runs,
a cap of 8 ends drafts the classifier would continue. But a cap changes which threshold is best (a
low threshold wastes more drafting under a long cap), so the coordinator needs replays at that cap too.

A greedy collection made with a larger ``--k`` traces paths whose continuations allow the exact replay
(``core.disco.replay``) at any cap up to that k. This command replays the artifact's classifier on the
validation prompts' paths at each cap asked for and every threshold of ``core.disco.training.THRESHOLDS``,
and rewrites the artifact's ``threshold_replay`` with them (``calibration`` records how). The weights and
everything else stay as trained. With it the coordinator chooses, per request without its own K, both
the cap and the threshold that replay fastest at its measured costs.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.disco.artifact import StopArtifact, recalibrated_spec
from core.disco.replay import ReplayPath
from core.disco.thresholds import ThresholdReplay
from core.disco.training import Validation, threshold_replays


def default_caps(trained_k: int | None, collected_k: int) -> tuple[int, ...]:
    """Every cap from the trained draft length (1 if unknown) to the collection's k."""
    return tuple(range(min(trained_k or 1, collected_k), collected_k + 1))


def calibration_replays(
    artifact: StopArtifact,
    paths: Sequence[ReplayPath],
    collected_k: int,
    *,
    prompts: range,
    caps: Sequence[int],
) -> tuple[ThresholdReplay, ...]:
    """The classifier's exact replays on ``prompts`` at each cap and threshold; ``ValueError`` says
    what rules them out (a non-greedy artifact, a prompt without a path, a cap beyond the collection)."""
    if artifact.regime != "greedy":
        raise ValueError(
            f"the artifact was trained on {artifact.regime} labels; only a greedy artifact of a pair with "
            "one tokenizer replays exactly on traced paths"
        )
    if not caps:
        raise ValueError("no caps to replay at")
    bad = [cap for cap in caps if not 1 <= cap <= collected_k]
    if bad:
        raise ValueError(
            f"caps {bad} are outside 1..{collected_k}: the collection's paths (--k {collected_k}) replay "
            "drafts of at most that many tokens; collect with a larger --k"
        )
    chosen = [path for path in paths if path.prompt_index in prompts]
    missing = sorted(set(prompts) - {path.prompt_index for path in chosen})
    if missing:
        raise ValueError(
            f"no traced path for the validation prompts {missing}: collect them greedily (disco collect)"
        )
    replays: list[ThresholdReplay] = []
    for cap in sorted(set(caps)):
        replays.extend(threshold_replays(artifact.classifier, Validation((), chosen, cap)))
    return tuple(replays)


def calibrated_spec(
    artifact: StopArtifact,
    paths: Sequence[ReplayPath],
    collected_k: int,
    *,
    prompts: range,
    caps: Sequence[int],
) -> str:
    """``artifact``'s spec with its validation replays made at ``caps`` (``calibration_replays``)."""
    replays = calibration_replays(artifact, paths, collected_k, prompts=prompts, caps=caps)
    calibration = {
        "caps": sorted(set(caps)),
        "validation_prompts": [prompts.start, prompts.stop - 1],
        "collected_k": collected_k,
        "replay": "exact",
    }
    return recalibrated_spec(artifact, replays, calibration)
