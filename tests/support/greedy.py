"""Greedy identity with near-ties: two greedy outputs agree token for token, or first differ at a near-tie.

A multi-token verification forward and a one-token decode round differently; where the target's top two
logits are nearly equal they may pick different argmaxes (ALGORITHMS.md §8). The coordinator records such
positions (``GenerationStats.near_tie_positions``); a difference anywhere else is a bug.
"""

from __future__ import annotations

from typing import Any


def first_difference(a: Any, b: Any) -> int | None:
    """The first position where two token sequences differ (the shorter one's length if one is a prefix)."""
    a, b = list(a), list(b)
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def assert_greedy_identical(result: Any, reference: Any, context: object = "") -> bool:
    """Asserts two greedy results agree, up to a recorded near-tie; returns True when fully identical.

    ``result`` and ``reference`` are SDK ``GenerationResult``s or protobuf ``GenerateResponse``s (anything
    with ``token_ids`` and ``stats.near_tie_positions``).
    """
    position = first_difference(result.token_ids, reference.token_ids)
    if position is None:
        return True
    ties = {*result.stats.near_tie_positions, *reference.stats.near_tie_positions}
    assert position in ties, (
        f"greedy outputs differ at position {position}, which is no recorded near-tie {sorted(ties)}: "
        f"{list(result.token_ids)} != {list(reference.token_ids)} ({context})"
    )
    return False
