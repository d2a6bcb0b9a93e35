"""The DISCO artifact: a folder with ``classifier.json`` (the spec) and ``classifier.safetensors``.

The spec (JSON object) holds ``format`` (``polyspec-disco-classifier``), ``version`` (1), ``features``
(``core.disco.features.FEATURE_NAMES`` and ``feature_version``), ``kind`` (logistic | mlp),
``threshold`` (the continue probability under which the draft stops), ``pair`` (the drafter's and the
target's ``model_fingerprint`` from Info, and their names for messages), ``regime`` (greedy | sampled |
slem: the labels it was trained on; slem for a drafter and a target with different tokenizers, whose
classifier stops drafts of every cross-vocabulary algorithm), ``validation`` (metrics on the validation
prompts) and ``training`` (seed and settings, to reproduce it; ``training.k``, when present, is the draft
length of the collection it was trained on: its feature ``position`` never reached k, so ``disco``
without a K drafts at most k tokens) and, optionally, ``threshold_replay`` (what the validation replay
did at each threshold tried, ``core.disco.thresholds``: the coordinator picks the threshold for the costs
it measures, ``threshold`` until it has measured them; a replay's ``drafted`` has one count per draft
length up to the cap it was made at, and ``polyspec disco calibrate`` adds replays at other caps, saying
how in ``calibration``, so that plain ``disco`` can choose its cap too). The coordinator sends spec and
weights to each drafter replica with SetStopClassifier under ``classifier_id``, a hash of both. Anything
malformed raises ``DiscoArtifactError`` saying what is wrong. ``find_artifact`` picks, among the artifact
folders under a root, the one trained for a drafter/target pair, by the model fingerprints in the specs
(folder names are for people only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from core.disco.classifier import ClassifierKind, StopClassifier
from core.disco.features import FEATURE_NAMES, FEATURE_VERSION
from core.disco.thresholds import ThresholdReplay

ARTIFACT_FORMAT = "polyspec-disco-classifier"
ARTIFACT_VERSION = 1
SPEC_FILE = "classifier.json"
WEIGHTS_FILE = "classifier.safetensors"
REGIMES = ("greedy", "sampled", "slem")


class DiscoArtifactError(ValueError):
    """A stop-classifier artifact that cannot be used (unreadable, another version, another pair)."""


@dataclass(frozen=True)
class PairFingerprint:
    """The drafter/target pair an artifact was trained for (Info ``model_fingerprint`` of each)."""

    drafter: str
    target: str
    drafter_model: str = ""
    target_model: str = ""


@dataclass(frozen=True)
class StopArtifact:
    """A parsed artifact: the classifier, what it was trained for, and the bytes it travels as."""

    classifier: StopClassifier
    pair: PairFingerprint
    regime: str
    validation: Mapping[str, Any]
    spec_json: str = field(repr=False)
    weights: bytes = field(repr=False)
    trained_k: int | None = None  # ``training.k``: the collection's draft length; None in older artifacts
    # ``threshold_replay``: each threshold's validation replay (``core.disco.thresholds``); () in older ones
    threshold_replay: tuple[ThresholdReplay, ...] = ()

    @property
    def classifier_id(self) -> str:
        digest = hashlib.sha256(self.spec_json.encode() + b"\0" + self.weights).hexdigest()
        return f"disco-{digest[:16]}"

    def check_pair(self, drafter_fingerprint: str, target_fingerprint: str) -> None:
        """Raises ``DiscoArtifactError`` unless the artifact was trained for this drafter and target."""
        for role, trained, served in (
            ("drafter", self.pair.drafter, drafter_fingerprint),
            ("target", self.pair.target, target_fingerprint),
        ):
            if trained != served:
                name = self.pair.drafter_model if role == "drafter" else self.pair.target_model
                raise DiscoArtifactError(
                    f"the stop classifier was trained for the {role} {name or '?'} (model fingerprint "
                    f"{trained}), but the {role} served here has model fingerprint {served or 'unknown'}; "
                    "train one for this pair with `polyspec disco collect` and `polyspec disco train`"
                )


def build_spec(
    classifier: StopClassifier,
    pair: PairFingerprint,
    regime: str,
    validation: Mapping[str, Any],
    training: Mapping[str, Any],
    *,
    threshold_replay: Sequence[ThresholdReplay] = (),
) -> str:
    """The JSON spec of an artifact (keys sorted, so equal artifacts are equal bytes)."""
    spec: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "features": {"names": list(FEATURE_NAMES), "version": FEATURE_VERSION},
        "kind": classifier.kind.value,
        "threshold": classifier.threshold,
        "pair": {
            "drafter_fingerprint": pair.drafter,
            "target_fingerprint": pair.target,
            "drafter_model": pair.drafter_model,
            "target_model": pair.target_model,
        },
        "regime": regime,
        "validation": dict(validation),
        "training": dict(training),
    }
    if threshold_replay:
        spec["threshold_replay"] = replay_entries(threshold_replay)
    return json.dumps(spec, indent=2, sort_keys=True)


def replay_entries(replays: Sequence[ThresholdReplay]) -> list[dict[str, Any]]:
    """``threshold_replay``'s JSON entries."""
    return [{"threshold": r.threshold, "tokens": r.tokens, "drafted": list(r.drafted)} for r in replays]


def recalibrated_spec(
    artifact: StopArtifact, replays: Sequence[ThresholdReplay], calibration: Mapping[str, Any]
) -> str:
    """``artifact``'s spec with ``threshold_replay`` replaced by ``replays`` (made at one cap or
    several) and ``calibration`` saying how they were made; everything else, the weights included,
    stays as trained."""
    spec = _spec_object(artifact.spec_json)
    spec["threshold_replay"] = replay_entries(replays)
    spec["calibration"] = dict(calibration)
    return json.dumps(spec, indent=2, sort_keys=True)


def serialize_weights(classifier: StopClassifier) -> bytes:
    tensors: dict[str, Tensor] = {name: t.contiguous() for name, t in classifier.weights.items()}
    return bytes(save_tensors(tensors, metadata={"format": ARTIFACT_FORMAT}))


def parse_artifact(spec_json: str, weights: bytes) -> StopArtifact:
    """Checks and parses an artifact's two parts; ``DiscoArtifactError`` says what is wrong."""
    spec = _spec_object(spec_json)
    kind = _kind(spec)
    try:
        tensors = load_tensors(weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise DiscoArtifactError(f"the weights are not a readable safetensors file: {exc}") from exc
    threshold = spec.get("threshold")
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        raise DiscoArtifactError(f"threshold must be a number, got {threshold!r}")
    try:
        classifier = StopClassifier.build(kind, tensors, len(FEATURE_NAMES), float(threshold))
    except ValueError as exc:
        raise DiscoArtifactError(f"the weights do not form a {kind.value} classifier: {exc}") from exc
    regime = spec.get("regime")
    if regime not in REGIMES:
        raise DiscoArtifactError(f"regime must be one of {REGIMES}, got {regime!r}")
    validation = spec.get("validation", {})
    if not isinstance(validation, dict):
        raise DiscoArtifactError("validation must be a JSON object")
    pair, trained_k = _pair(spec), _trained_k(spec)
    replays = _threshold_replay(spec)
    return StopArtifact(classifier, pair, str(regime), validation, spec_json, weights, trained_k, replays)


def _threshold_replay(spec: Mapping[str, Any]) -> tuple[ThresholdReplay, ...]:
    """``threshold_replay``: each threshold's validation replay (empty when the spec has none)."""
    entries = spec.get("threshold_replay", [])
    if not isinstance(entries, list):
        raise DiscoArtifactError("threshold_replay must be a list")
    replays = []
    for index, entry in enumerate(entries):
        where = f"threshold_replay[{index}]"
        if not isinstance(entry, dict):
            raise DiscoArtifactError(f"{where} must be an object with threshold, tokens and drafted")
        threshold, tokens, drafted = entry.get("threshold"), entry.get("tokens"), entry.get("drafted")
        if not _number(threshold) or not 0.0 < float(threshold) < 1.0:
            raise DiscoArtifactError(f"{where}.threshold must be a number in (0, 1), got {threshold!r}")
        if not _count(tokens):
            raise DiscoArtifactError(f"{where}.tokens must be a non-negative integer, got {tokens!r}")
        if not isinstance(drafted, list) or not all(_count(n) for n in drafted):
            raise DiscoArtifactError(
                f"{where}.drafted (rounds per draft length) must be a list of non-negative integers, "
                f"got {drafted!r}"
            )
        replays.append(ThresholdReplay(float(threshold), int(tokens), tuple(int(n) for n in drafted)))
    return tuple(replays)


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _trained_k(spec: Mapping[str, Any]) -> int | None:
    """``training.k``, the draft length the classifier was trained on (None when the spec has none)."""
    training = spec.get("training", {})
    if not isinstance(training, dict):
        raise DiscoArtifactError("training must be a JSON object")
    k = training.get("k")
    if k is None:
        return None
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise DiscoArtifactError(
            f"training.k (the draft length the classifier was trained on) must be a positive integer, "
            f"got {k!r}"
        )
    return k


def _spec_object(spec_json: str) -> dict[str, Any]:
    try:
        spec = json.loads(spec_json)
    except json.JSONDecodeError as exc:
        raise DiscoArtifactError(f"the spec is not JSON: {exc}") from exc
    if not isinstance(spec, dict) or spec.get("format") != ARTIFACT_FORMAT:
        raise DiscoArtifactError(f"the spec is not a {ARTIFACT_FORMAT} spec (its 'format' differs)")
    if spec.get("version") != ARTIFACT_VERSION:
        raise DiscoArtifactError(
            f"artifact version {spec.get('version')!r} is not supported (this build reads {ARTIFACT_VERSION})"
        )
    features = spec.get("features")
    expected = {"names": list(FEATURE_NAMES), "version": FEATURE_VERSION}
    if features != expected:
        raise DiscoArtifactError(f"the artifact's features {features!r} differ from this build's {expected}")
    return spec


def _kind(spec: Mapping[str, Any]) -> ClassifierKind:
    try:
        return ClassifierKind(spec.get("kind"))
    except ValueError as exc:
        kinds = [k.value for k in ClassifierKind]
        raise DiscoArtifactError(f"kind must be one of {kinds}, got {spec.get('kind')!r}") from exc


def _pair(spec: Mapping[str, Any]) -> PairFingerprint:
    pair = spec.get("pair")
    if not isinstance(pair, dict):
        raise DiscoArtifactError("pair must be a JSON object with the drafter's and target's fingerprints")
    values = {key: pair.get(key, "") for key in ("drafter_fingerprint", "target_fingerprint")}
    if not all(isinstance(v, str) and v for v in values.values()):
        raise DiscoArtifactError("pair.drafter_fingerprint and pair.target_fingerprint must be non-empty")
    return PairFingerprint(
        values["drafter_fingerprint"],
        values["target_fingerprint"],
        str(pair.get("drafter_model", "")),
        str(pair.get("target_model", "")),
    )


def write_artifact(folder: Path, spec_json: str, weights: bytes) -> StopArtifact:
    """Checks and writes an artifact into ``folder`` (created); returns it parsed."""
    artifact = parse_artifact(spec_json, weights)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(spec_json + "\n", encoding="utf-8")
    (folder / WEIGHTS_FILE).write_bytes(weights)
    return artifact


def load_artifact(folder: Path) -> StopArtifact:
    """Reads and checks the artifact in ``folder``; ``DiscoArtifactError`` names the path and the cause."""
    try:
        spec_json = (folder / SPEC_FILE).read_text(encoding="utf-8").rstrip("\n")
        weights = (folder / WEIGHTS_FILE).read_bytes()
    except (OSError, UnicodeDecodeError) as exc:
        raise DiscoArtifactError(
            f"{folder}: cannot read the stop-classifier artifact ({SPEC_FILE} + {WEIGHTS_FILE}): {exc}"
        ) from exc
    try:
        return parse_artifact(spec_json, weights)
    except DiscoArtifactError as exc:
        raise DiscoArtifactError(f"{folder}: {exc}") from exc


def find_artifact(root: Path, drafter_fingerprint: str, target_fingerprint: str) -> Path | None:
    """The folder under ``root`` whose artifact was trained for this drafter and target, None if none is.

    Reads only each sub-folder's JSON spec (a folder without one is skipped) and compares the pair's model
    fingerprints; a spec that cannot be read or parsed, or two folders for the same pair, raise
    ``DiscoArtifactError`` naming the folders.
    """
    try:
        folders = sorted(path for path in root.iterdir() if path.is_dir())
    except OSError as exc:
        raise DiscoArtifactError(f"{root}: cannot list the stop-classifier artifacts: {exc}") from exc
    wanted = (drafter_fingerprint, target_fingerprint)
    specs = [folder for folder in folders if (folder / SPEC_FILE).is_file()]
    matches = [folder for folder in specs if _spec_pair(folder) == wanted]
    if len(matches) > 1:
        names = ", ".join(str(folder) for folder in matches)
        raise DiscoArtifactError(
            f"{root}: {len(matches)} stop-classifier artifacts are trained for this drafter and target "
            f"({names}); keep one"
        )
    return matches[0] if matches else None


def _spec_pair(folder: Path) -> tuple[str, str]:
    """The (drafter, target) model fingerprints of the artifact spec in ``folder``."""
    try:
        spec_json = (folder / SPEC_FILE).read_text(encoding="utf-8")
        pair = _pair(_spec_object(spec_json))
    except (OSError, UnicodeDecodeError) as exc:
        message = f"cannot read the stop-classifier spec {SPEC_FILE}: {exc}"
        raise DiscoArtifactError(f"{folder}: {message}") from exc
    except DiscoArtifactError as exc:
        raise DiscoArtifactError(f"{folder}: {exc}") from exc
    return pair.drafter, pair.target
