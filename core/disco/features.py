"""The stop rule's features of one draft token: the one code path of serving, collection and training.

For a draft token drawn from the drafter's distribution at draft position ``position`` (0 = the first
token of the draft), from ``stop_probs``, the drafter's *untruncated* warped distribution (before the
support cap; greedy: the temperature-1 softmax, the distribution the confidence stop reads):

- ``token_prob``: the drawn token's probability (the confidence of ``core.drafting``);
- ``top1_prob``, ``top2_prob``, ``top3_prob``: the three largest probabilities;
- ``entropy``: the distribution's entropy in nats;
- ``position``: the token's index in the draft.

These follow the paper's set (the draft model's top probabilities, its entropy and the index of the
draft token), with the drawn token's own probability added so a sampled draft's token is described too.
A feature depends only on the drafter's own state, so a stop decided from it keeps verification lossless.
"""

from __future__ import annotations

import torch
from torch import Tensor

FEATURE_NAMES: tuple[str, ...] = ("token_prob", "top1_prob", "top2_prob", "top3_prob", "entropy", "position")
FEATURE_VERSION = 1
_TOP = 3


def token_features(
    stop_probs: Tensor,  # [r, vocab]: untruncated warped distribution of each row
    tokens: Tensor,  # [r] int64: the token each row drew
    position: int,
) -> Tensor:  # [r, len(FEATURE_NAMES)] float32
    """The features of the draft tokens of r rows drawn at one draft position."""
    assert stop_probs.dim() == 2 and tokens.shape == stop_probs.shape[:1], "stop_probs [r, vocab], tokens [r]"
    probs = stop_probs.to(torch.float64)
    token_prob = probs.gather(-1, tokens.unsqueeze(-1))  # [r, 1]
    width = min(_TOP, probs.shape[-1])
    top = torch.topk(probs, width, dim=-1).values  # [r, width]
    if width < _TOP:
        top = torch.cat([top, top.new_zeros((probs.shape[0], _TOP - width))], dim=-1)
    entropy = -torch.where(probs > 0, probs * torch.log(probs), probs.new_zeros(())).sum(-1, keepdim=True)
    index = probs.new_full((probs.shape[0], 1), float(position))
    return torch.cat([token_prob, top, entropy, index], dim=-1).to(torch.float32)
