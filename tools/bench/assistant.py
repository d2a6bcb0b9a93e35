"""transformers' assisted-generation variants in the reference: how the assistant (the drafter) drafts.

transformers reads these knobs from the assistant's own ``generation_config``
(``transformers.generation.candidate_generator.AssistedCandidateGenerator``):

- ``num_assistant_tokens`` and ``num_assistant_tokens_schedule``: the draft length, ``constant``, or
  ``heuristic`` (+2 after a fully accepted draft, -1 otherwise);
- ``assistant_confidence_threshold``: the assistant stops drafting at a token whose probability is below
  it (``ConfidenceCriteria``). With scikit-learn importable and a drafter of the target's vocabulary
  (``AssistedCandidateGenerator`` itself, not universal assisted generation), transformers retunes the
  threshold after every round from the ROC curve of the drafted tokens' probabilities against their
  acceptance (false negatives weighted 3x): the adaptive threshold, its best variant.

Variants: ``assisted`` leaves the installed transformers' defaults (5.x: 20 tokens, constant, threshold
0.4 — adaptive when scikit-learn is there); ``assisted-adaptive`` asks for that adaptive threshold
explicitly and is skipped, saying why, where transformers would not adapt; ``assisted-heuristic`` is the
earlier default (5 tokens, heuristic schedule, no confidence stop). Across vocabularies each runs as
universal assisted generation (``uag``, ``uag-heuristic``). Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

AssistedMethod = Literal["assisted", "assisted-adaptive", "assisted-heuristic"]
ASSISTED_METHODS: tuple[AssistedMethod, ...] = ("assisted", "assisted-adaptive", "assisted-heuristic")
CROSS_VOCABULARY_PREFIX = "uag"
ADAPTIVE_START_THRESHOLD = 0.4  # transformers' default starting point


@dataclass(frozen=True)
class AssistantVariant:
    """The assistant's generation-config knobs a variant sets (None: transformers' default)."""

    num_assistant_tokens: int | None = None
    schedule: str | None = None
    confidence_threshold: float | None = None
    needs_adaptive: bool = False
    """Only meaningful where transformers adapts the threshold (skipped elsewhere)."""

    def settings(self) -> dict[str, Any]:
        """The ``generation_config`` attributes to set on the assistant."""
        fields = {
            "num_assistant_tokens": self.num_assistant_tokens,
            "num_assistant_tokens_schedule": self.schedule,
            "assistant_confidence_threshold": self.confidence_threshold,
        }
        return {key: value for key, value in fields.items() if value is not None}


ASSISTANT_VARIANTS: dict[AssistedMethod, AssistantVariant] = {
    "assisted": AssistantVariant(),
    "assisted-adaptive": AssistantVariant(20, "constant", ADAPTIVE_START_THRESHOLD, needs_adaptive=True),
    "assisted-heuristic": AssistantVariant(5, "heuristic", 0.0),
}


def configuration_method(method: AssistedMethod, same_vocabulary: bool) -> str:
    """The configuration's method name: ``uag...`` across vocabularies (universal assisted generation)."""
    if same_vocabulary:
        return method
    return CROSS_VOCABULARY_PREFIX + method.removeprefix("assisted")


def variant_of(configuration_method_name: str) -> AssistantVariant | None:
    """The variant of a transformers configuration's method (None: no assistant)."""
    for method, variant in ASSISTANT_VARIANTS.items():
        if configuration_method_name in (method, configuration_method(method, same_vocabulary=False)):
            return variant
    return None


def adapts_threshold(threshold: float | None, *, same_vocabulary: bool, sklearn_importable: bool) -> bool:
    """Whether transformers retunes the confidence threshold online (its own condition)."""
    return bool(threshold) and same_vocabulary and sklearn_importable


def skip_reason(method: AssistedMethod, *, same_vocabulary: bool, sklearn_importable: bool) -> str | None:
    """Why a variant cannot run as asked here (None: it can)."""
    variant = ASSISTANT_VARIANTS[method]
    if not variant.needs_adaptive:
        return None
    if not same_vocabulary:
        return (
            "transformers adapts the confidence threshold only for a drafter with the target's vocabulary "
            "(AssistedCandidateGenerator, not universal assisted generation)"
        )
    if not sklearn_importable:
        return (
            "transformers adapts the confidence threshold only with scikit-learn: "
            "pip install 'polyspec[bench]'"
        )
    return None
