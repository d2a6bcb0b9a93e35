"""Same-vocabulary toy requests for the DSI scheduler's tests: a target and a drafter LM that disagree
often enough that rejections, full acceptances, bonus tokens and plain steps all happen."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.dsimodel import SchedulerKnobs
from coordinator.loop.snapshot import RequestFrame
from coordinator.request import AlgorithmName
from core.sampling import SamplingConfig
from tests.support.dsi_toys import DelayRule, ToyReplicaCalls, run_dsi
from tests.support.frames import first_snapshot, toy_endpoint, toy_frame, with_seed
from tests.support.toy_lm import TableLM, random_lm
from tests.support.toy_service import ToyModel, bare_info

VOCAB = 4
PROMPT = (0,)


@dataclass(frozen=True, eq=False)
class SdCase:
    target: TableLM
    drafter: TableLM
    frame: RequestFrame


def sd_case(config: SamplingConfig, max_new_tokens: int, *, target_seed: int = 3, drafter_seed: int = 4) -> SdCase:
    target, drafter = random_lm(target_seed, VOCAB, scale=1.0), random_lm(drafter_seed, VOCAB, scale=1.0)
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


def toy_calls(
    target: TableLM | object, drafter: TableLM | object, replicas: int, delays: DelayRule, seed: int
) -> ToyReplicaCalls:
    targets = [ToyModel(target, bare_info(target.vocab_size)) for _ in range(replicas)]  # type: ignore[attr-defined]
    drafter_model = ToyModel(drafter, bare_info(drafter.vocab_size), max_support=16)  # type: ignore[attr-defined]
    return ToyReplicaCalls(targets, drafter_model, delays, random.Random(seed))


def run_many(
    frame: RequestFrame,
    make_calls: object,
    knobs: SchedulerKnobs,
    seeds: Sequence[int],
    *,
    threshold: float = 0.0,
    batch: int = 64,
) -> list[tuple[int, ...]]:
    """The request once per seed (``batch`` at a time on one event loop, each with its own replicas)."""

    async def one(seed: int) -> tuple[int, ...]:
        calls = make_calls(seed)  # type: ignore[operator]
        output, _, _ = await run_dsi(first_snapshot(with_seed(frame, seed)), calls, knobs, threshold)
        return output

    async def every() -> list[tuple[int, ...]]:
        outputs: list[tuple[int, ...]] = []
        for start in range(0, len(seeds), batch):
            outputs += await asyncio.gather(*(one(s) for s in seeds[start : start + batch]))
        return outputs

    return asyncio.run(every())
