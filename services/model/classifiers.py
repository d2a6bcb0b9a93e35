"""Stop classifiers (DISCO): registered once with SetStopClassifier and named by Draft.

The coordinator sends a trained artifact (``core.disco.artifact``: JSON spec + safetensors weights) once
per drafter replica under an id; each Draft naming it stops after a draft token whose continue
probability is below the threshold (``core.disco.classifier``, evaluated inside the drafter's loop, so a
draft costs no round trip per token). ``StopClassifierStore`` mirrors ``services.model.masks``: LRU-bounded
(the service's ``max_token_masks`` bound), guarded by a lock (registered on the event loop, read on the
worker thread), entries never changed in place. An unknown id raises ``UnknownStopClassifierError``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import structlog

from core.disco.artifact import DiscoArtifactError, parse_artifact
from core.disco.classifier import StopClassifier
from core.errors import InvalidArgumentError, UnknownStopClassifierError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RegisteredClassifier:
    """The outcome of one registration."""

    parameters: int
    evicted_ids: tuple[str, ...]


class StopClassifierStore:
    """Stop classifiers by id for one model, the least recently registered or used dropped beyond capacity."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._lock = threading.Lock()
        self._classifiers: OrderedDict[str, StopClassifier] = OrderedDict()

    def __len__(self) -> int:
        return len(self._classifiers)

    def register(self, classifier_id: str, spec_json: str, weights: bytes) -> RegisteredClassifier:
        """Parses and stores a classifier; a malformed one is ``InvalidArgumentError`` naming the part."""
        if not classifier_id:
            raise InvalidArgumentError("classifier_id", "must not be empty")
        try:
            classifier = parse_artifact(spec_json, weights).classifier
        except DiscoArtifactError as exc:
            field = "weights" if "weights" in str(exc) else "spec_json"
            raise InvalidArgumentError(field, str(exc)) from exc
        evicted: list[str] = []
        with self._lock:
            self._classifiers[classifier_id] = classifier
            self._classifiers.move_to_end(classifier_id)
            while len(self._classifiers) > self._capacity:
                evicted.append(self._classifiers.popitem(last=False)[0])
        log.info(
            "stop_classifier_registered",
            classifier_id=classifier_id,
            kind=classifier.kind.value,
            parameters=classifier.parameters,
            evicted=evicted,
        )
        return RegisteredClassifier(classifier.parameters, tuple(evicted))

    def get(self, classifier_id: str) -> StopClassifier:
        """The classifier under ``classifier_id``; ``UnknownStopClassifierError`` when it is not held."""
        with self._lock:
            classifier = self._classifiers.get(classifier_id)
            if classifier is None:
                raise UnknownStopClassifierError(
                    f"stop_classifier_id {classifier_id!r} is not registered on this server (never sent, "
                    "evicted or another replica); register it with SetStopClassifier and retry"
                )
            self._classifiers.move_to_end(classifier_id)
            return classifier
