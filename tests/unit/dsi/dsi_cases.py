"""Same-vocabulary toy requests for the DSI scheduler's tests: a target and a drafter LM that disagree
often enough that rejections, full acceptances, bonus tokens and plain steps all happen."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coordinator.dsi.scheduler import DsiCounters
from coordinator.dsimodel import SchedulerKnobs
from coordinator.loop.snapshot import RequestFrame
from coordinator.request import AlgorithmName
from core.sampling import SamplingConfig
from tests.support.dsi_toys import DelayRule, ToyReplicaCalls, run_dsi
from tests.support.frames import first_snapshot, toy_endpoint, toy_frame, with_seed
from tests.support.toy_lm import TableLM, ToyLM, random_lm
from tests.support.toy_service import ToyModel, bare_info

VOCAB = 3
PROMPT = (0,)


@dataclass(frozen=True, eq=False)
class SdCase:
    target: TableLM
    drafter: TableLM
    frame: RequestFrame


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
    drafter_model = ToyModel(drafter, bare_info(drafter.vocab_size), max_support=16)
    return ToyReplicaCalls(targets, drafter_model, delays, random.Random(seed))


def run_many(
    frame: RequestFrame,
    make_calls: Callable[[int], ToyReplicaCalls],
    knobs: SchedulerKnobs,
    seeds: Sequence[int],
    *,
    threshold: float = 0.0,
    batch: int = 64,
) -> tuple[list[tuple[int, ...]], DsiCounters]:
    """The request once per seed (``batch`` at a time on one event loop, each with its own replicas):
    the outputs and the scheduler counters summed over the runs."""
    total = DsiCounters()

    async def one(seed: int) -> tuple[int, ...]:
        calls = make_calls(seed)
        output, _, scheduler = await run_dsi(first_snapshot(with_seed(frame, seed)), calls, knobs, threshold)
        add_counters(total, scheduler.counters)
        return output

    async def every() -> list[tuple[int, ...]]:
        outputs: list[tuple[int, ...]] = []
        for start in range(0, len(seeds), batch):
            outputs += await asyncio.gather(*(one(s) for s in seeds[start : start + batch]))
        return outputs

    return asyncio.run(every()), total


def add_counters(total: DsiCounters, one: DsiCounters) -> None:
    for name in ("rounds", "draft_tokens", "accepted_tokens", "verifications_preempted", "drafts_preempted"):
        setattr(total, name, getattr(total, name) + getattr(one, name))
    total.plain_steps += one.plain_steps
    total.bonus_discarded += one.bonus_discarded
    total.short_drafts += one.short_drafts
