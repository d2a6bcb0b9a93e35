"""Same-vocabulary toy requests for the DSI scheduler's tests: a target and a drafter LM that disagree
often enough that rejections, full acceptances, bonus tokens and plain steps all happen."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from coordinator.loop.snapshot import RequestFrame
from coordinator.request import AlgorithmName
from core.sampling import SamplingConfig
from tests.support.dsi_toys import DelayRule, ToyReplicaCalls
from tests.support.frames import toy_endpoint, toy_frame
from tests.support.law_toys import CachedToy, ToyLaws
from tests.support.toy_lm import TableLM, ToyLM, random_lm
from tests.support.toy_service import ToyModel, bare_info

VOCAB = 3
PROMPT = (0,)
DRAFTER_SUPPORT = 16


@dataclass(eq=False)
class SdCase:
    target: TableLM
    drafter: TableLM
    frame: RequestFrame
    target_laws: ToyLaws = field(init=False)
    drafter_laws: ToyLaws = field(init=False)

    def __post_init__(self) -> None:
        self.target_laws = ToyLaws(self.target)
        self.drafter_laws = ToyLaws(self.drafter, DRAFTER_SUPPORT)

    def cached_calls(self, replicas: int, delays: DelayRule, seed: int) -> ToyReplicaCalls:
        """``replicas`` cached target replicas and a cached drafter over the case's shared laws."""
        targets = [CachedToy(self.target_laws, bare_info(VOCAB)) for _ in range(replicas)]
        drafter = CachedToy(self.drafter_laws, bare_info(VOCAB))
        return ToyReplicaCalls(targets, drafter, delays, random.Random(seed))


def sd_case(
    config: SamplingConfig, max_new_tokens: int, *, target_seed: int = 3, drafter_seed: int | None = None
) -> SdCase:
    target = random_lm(target_seed, VOCAB, scale=1.0)
    drafter = random_lm(target_seed if drafter_seed is None else drafter_seed, VOCAB, scale=0.6)
    frame = toy_frame(
        AlgorithmName.SD,
        config,
        target=toy_endpoint("target", VOCAB),
        drafter=toy_endpoint("drafter", VOCAB),
        max_new_tokens=max_new_tokens,
        target_prompt=PROMPT,
        drafter_prompt=PROMPT,
        max_support=VOCAB,
    )
    return SdCase(target, drafter, frame)


def toy_calls(target: ToyLM, drafter: ToyLM, replicas: int, delays: DelayRule, seed: int) -> ToyReplicaCalls:
    """``replicas`` target replicas and one drafter, each a toy model with its own cache."""
    targets = [ToyModel(target, bare_info(target.vocab_size)) for _ in range(replicas)]
    drafter_model = ToyModel(drafter, bare_info(drafter.vocab_size), max_support=DRAFTER_SUPPORT)
    return ToyReplicaCalls(targets, drafter_model, delays, random.Random(seed))
