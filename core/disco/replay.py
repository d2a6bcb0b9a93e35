"""Exact greedy replay of a stop rule along the target's own output.

Replaying a rule on full-length rounds (``core.disco.training.replay_rate``) keeps the rounds where the
collection's fixed-length drafts put them. A rule that stops earlier starts its next round elsewhere, so
that replay is not what the rule would do. On one 0.5B -> 1.5B pair it put a classifier 1.16x over static
drafts where the services measured 1.04x.

Under greedy decoding the output is the target's own path whatever the drafts are. The draft from any
output position p is the drafter's greedy continuation of ``output[:p]``. It follows the path while the
drafter's next token equals the target's. At the first position m where they differ, it goes on with the
drafter's own token, and what it drafts after that depends on m alone. So two things describe every
round any stop rule could run on this prompt (``ReplayPath``):

- ``features[i]``: the drafter's features for its next token after ``output[:i]``;
- ``matches[i]``: whether that token is ``output[i]``;
- ``continuations[m]``: for each mismatch m, the features of the k - 1 tokens the drafter drafts after
  its own token there.

The ``position`` feature is the only one that depends on where a round started. The replay sets it
(``path_scores``). ``replay_path`` then walks the output the way the coordinator does:

1. A round drafts up to min(k, tokens left).
2. It ends after the first token whose score is below the threshold, keeping that token.
3. It commits the accepted tokens and the target's own token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from core.disco.features import FEATURE_NAMES

POSITION = FEATURE_NAMES.index("position")

Row = tuple[float, ...]
# Continue scores of feature rows (a classifier's continue probabilities, a confidence, ...)
Scorer = Callable[[Sequence[Row]], Sequence[float]]


@dataclass(frozen=True)
class ReplayPath:
    """A prompt's greedy output, seen by the drafter: enough to replay any stop rule exactly."""

    prompt_index: int
    features: tuple[Row, ...]  # [n]: the drafter's next token after output[:i] (its position: 0)
    matches: tuple[bool, ...]  # [n]: that token is output[i]
    continuations: Mapping[int, tuple[Row, ...]]  # mismatch i -> [k - 1]: the tokens drafted after it

    def __post_init__(self) -> None:
        if len(self.features) != len(self.matches):
            raise ValueError(f"{len(self.features)} feature rows for {len(self.matches)} output tokens")
        missing = [i for i, match in enumerate(self.matches) if not match and i not in self.continuations]
        if missing:
            raise ValueError(f"no continuation after the drafter's own token at output positions {missing}")


@dataclass(frozen=True)
class PathScores:
    """Every continue score a replay of one path can read, at every draft position."""

    on_path: tuple[tuple[float, ...], ...]  # [n][k]: output token i drafted at position j
    # mismatch m -> [k][k - 1]: with the mismatch drafted at position j, the c-th token after it
    after_mismatch: Mapping[int, tuple[tuple[float, ...], ...]]


def _at(row: Row, position: int) -> Row:
    return (*row[:POSITION], float(position), *row[POSITION + 1 :])


def path_scores(path: ReplayPath, k: int, scorer: Scorer) -> PathScores:
    """The scores of ``path`` at each draft position up to k, from one call of ``scorer``. A
    continuation shorter than k - 1 (the drafter's context was full) scores its missing tokens -inf:
    the draft ends there."""
    rows: list[Row] = [_at(row, j) for row in path.features for j in range(k)]
    mismatches = sorted(path.continuations)
    for m in mismatches:
        after = path.continuations[m][: k - 1]
        rows.extend(_at(after[c], j + 1 + c) for j in range(k) for c in range(len(after)))
    scores = list(scorer(rows)) if rows else []
    on_path = tuple(tuple(scores[i * k : (i + 1) * k]) for i in range(len(path.features)))
    offset = len(path.features) * k
    after_mismatch = {}
    for m in mismatches:
        count = len(path.continuations[m][: k - 1])
        padding = (float("-inf"),) * (k - 1 - count)
        per_position = []
        for _ in range(k):
            per_position.append((*scores[offset : offset + count], *padding))
            offset += count
        after_mismatch[m] = tuple(per_position)
    return PathScores(on_path, after_mismatch)


@dataclass(frozen=True)
class PathRound:
    drafted: int
    accepted: int
    committed: int  # output tokens it adds (the accepted ones and the target's, within the output)


def replay_path(path: ReplayPath, scores: PathScores, threshold: float, k: int) -> list[PathRound]:
    """The rounds a stop rule (stop after a token scored below ``threshold``) runs along ``path``."""
    rounds: list[PathRound] = []
    length, start = len(path.matches), 0
    while start < length:
        cap = min(k, length - start)
        drafted, accepted = cap, None
        for j in range(cap):
            position = start + j
            if accepted is None:
                score = scores.on_path[position][j]
                if not path.matches[position]:
                    accepted, mismatch, at = j, position, j
            else:
                score = scores.after_mismatch[mismatch][at][j - at - 1]
            if score < threshold:
                drafted = j + 1
                break
        kept = drafted if accepted is None else min(accepted, drafted)
        committed = min(kept + 1, length - start)
        rounds.append(PathRound(drafted, kept, committed))
        start += committed
    return rounds


def oracle_scores(path: ReplayPath, k: int) -> PathScores:
    """The scores of the rule that knows the target: continue on every token the target takes, stop on
    the first it does not (that token kept, as any stop keeps it). No drafter-side rule does better on
    the path; its replay is the ceiling a stop rule can reach at given costs."""
    on_path = tuple((1.0 if match else 0.0,) * k for match in path.matches)
    after = {m: tuple((0.0,) * (k - 1) for _ in range(k)) for m in path.continuations}
    return PathScores(on_path, after)
