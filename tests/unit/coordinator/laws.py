"""The exact law of a toy LM's first two sampled tokens (for distribution tests of the loop)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from coordinator.verify.sampling import SamplingConfig


class ToyLM(Protocol):
    """A toy LM's next-token distribution after a context, with the sampling warpers applied."""

    def probs(self, context: Sequence[int], config: SamplingConfig) -> torch.Tensor: ...  # [vocab]


def exact_two_token_law(lm: ToyLM, prompt: list[int], config: SamplingConfig) -> dict[tuple[int, int], float]:
    """P(first two tokens = (a, b)) for every pair with positive probability."""
    law: dict[tuple[int, int], float] = {}
    first = lm.probs(prompt, config)
    for a in torch.nonzero(first).flatten().tolist():
        second = lm.probs([*prompt, a], config)
        for b in torch.nonzero(second).flatten().tolist():
            law[(a, b)] = float(first[a] * second[b])
    return law
