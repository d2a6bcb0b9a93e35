"""The stop threshold for the deployment's costs, from what each threshold did on the validation prompts.

A classifier's best threshold depends on what a drafter step and a target verification cost, and those
are the deployment's, not the collection's: an int8 drafter steps in a third of a float32 one's time, a
service sharing its cores with another verifies 9 tokens well above 5, a GPU verifies them alike. So
``polyspec disco train`` keeps, for every threshold it tried, what the replay on the validation prompts
did (``ThresholdReplay``: the output tokens and how many rounds drafted each length), which replays
exactly at any costs; the coordinator picks the threshold for the costs it measures (``best_threshold``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Seconds of a target verification of a draft of j tokens (it feeds j + 1)
VerifyCost = Callable[[int], float]


@dataclass(frozen=True)
class ThresholdReplay:
    """The validation replay at one threshold: output tokens, and rounds per draft length (1..k)."""

    threshold: float
    tokens: int
    drafted: tuple[int, ...]  # drafted[j - 1]: rounds whose draft ended after j tokens

    def rate(self, draft_seconds: float, verify: VerifyCost, round_seconds: float = 0.0) -> float:
        """Output tokens per second at these costs (``round_seconds``: a round's cost beyond compute)."""
        seconds = sum(
            count * (length * draft_seconds + verify(length) + round_seconds)
            for length, count in enumerate(self.drafted, start=1)
        )
        return self.tokens / seconds if seconds > 0 else 0.0


def best_threshold(
    replays: Sequence[ThresholdReplay], draft_seconds: float, verify: VerifyCost, round_seconds: float = 0.0
) -> float:
    """The threshold whose replay is fastest at these costs (ties: the first; ``replays`` not empty)."""
    assert replays, "best_threshold needs at least one replay"
    best = max(replays, key=lambda replay: replay.rate(draft_seconds, verify, round_seconds))
    return best.threshold


def replayed_caps(replays: Sequence[ThresholdReplay]) -> tuple[int, ...]:
    """The draft caps the replays were made at (a replay's ``drafted`` has one count per length)."""
    return tuple(sorted({len(replay.drafted) for replay in replays}))


def best_setting(
    replays: Sequence[ThresholdReplay],
    draft_seconds: float,
    verify: VerifyCost,
    round_seconds: float = 0.0,
    *,
    max_cap: int,
    cap: int | None = None,
) -> tuple[int, float]:
    """The (cap, threshold) whose replay is fastest at these costs.

    The replays may come at several caps (``polyspec disco calibrate``). With ``cap`` (a request's own
    K) the threshold is chosen among the replays at the largest replayed cap not above it (the smallest
    replayed cap when every one is above it). Without, the cap is chosen too, among the replayed caps not
    above ``max_cap`` (the smallest replayed cap when none is). ``replays`` must not be empty."""
    caps = replayed_caps(replays)
    assert caps, "best_setting needs at least one replay"
    limit = cap if cap is not None else max_cap
    allowed = [c for c in caps if c <= limit] or [caps[0]]
    if cap is not None:
        allowed = allowed[-1:]
    pool = [replay for replay in replays if len(replay.drafted) in allowed]
    best = max(pool, key=lambda replay: replay.rate(draft_seconds, verify, round_seconds))
    return len(best.drafted), best.threshold
