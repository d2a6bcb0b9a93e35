"""The lookup structures of ``core.lookup`` against brute-force references on seeded random strings."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection, Sequence

import pytest

from core.lookup import NgramIndex, OutputMemory, SuffixIndex, SuffixTree, suffix_draft


def brute_ngram(
    tokens: Sequence[int], min_n: int, max_n: int, budget: int, stop: Collection[int]
) -> tuple[int, ...]:
    """Longest n first, the latest earlier occurrence of the suffix n-gram, then copy forward."""
    size = len(tokens)
    for n in range(min(max_n, size - 1), min_n - 1, -1):
        suffix = list(tokens[size - n :])
        ends = [end for end in range(n, size) if list(tokens[end - n : end]) == suffix]
        if ends:
            text = list(tokens)
            for j in range(budget):
                text.append(text[max(ends) + j])
                if text[-1] in stop:
                    break
            return tuple(text[size:])
    return ()


def brute_suffix_draft(
    strings: Sequence[Sequence[int]],
    context: Sequence[int],
    budget: int,
    *,
    depth: int,
    min_match: int,
    min_score: float,
    stop: Collection[int],
) -> tuple[tuple[int, ...], float]:
    """Per step: the longest suffix (min_match..depth-1) with a continuation in ``strings``, its most
    frequent continuation (ties: smallest id), scored by its share; stops as documented."""
    text, running, score = list(context), 1.0, 0.0
    draft: list[int] = []
    while len(draft) < budget:
        follow: Counter[int] = Counter()
        for length in range(min(depth - 1, len(text)), min_match - 1, -1):
            pattern = text[len(text) - length :]
            follow = Counter(
                s[i + length]
                for s in strings
                for i in range(len(s) - length)
                if list(s[i : i + length]) == pattern
            )
            if follow:
                break
        if not follow:
            break
        token = min(follow, key=lambda t: (-follow[t], t))
        share = follow[token] / sum(follow.values())
        if running * share < min_score:
            break
        running *= share
        score += running
        draft.append(token)
        text.append(token)
        if token in stop:
            break
    return tuple(draft), score


@pytest.mark.parametrize("seed", range(6))
def test_ngram_proposals_match_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = rng.choice([2, 3, 5])
    min_n = rng.randint(1, 3)
    max_n = rng.randint(min_n, 5)
    index = NgramIndex(min_n, max_n)
    tokens: list[int] = []
    for _ in range(120):
        grown = [rng.randrange(alphabet) for _ in range(rng.randint(1, 4))]
        index.extend(grown)
        tokens.extend(grown)
        budget, stop = rng.randint(1, 8), {rng.randrange(alphabet + 2)}
        assert index.propose(budget, stop) == brute_ngram(tokens, min_n, max_n, budget, stop)


def test_ngram_copies_past_the_end_to_repeat_a_period() -> None:
    index = NgramIndex(2, 4)
    index.extend([7, 8, 9, 7, 8, 9, 7, 8])
    assert index.propose(5) == (9, 7, 8, 9, 7)
    assert index.propose(5, stop_token_ids={7}) == (9, 7)


@pytest.mark.parametrize("seed", range(6))
def test_suffix_drafts_match_brute_force(seed: int) -> None:
    rng = random.Random(100 + seed)
    alphabet, depth = rng.choice([2, 3, 4]), rng.randint(2, 7)
    min_match, min_score = rng.randint(1, depth - 1), rng.choice([0.0, 0.2, 0.5])
    index = SuffixIndex(depth)
    for _ in range(80):
        index.extend(rng.randrange(alphabet) for _ in range(rng.randint(1, 3)))
        budget, stop = rng.randint(1, 8), {rng.randrange(alphabet + 2)}
        got = suffix_draft(
            [index.tree], index.tokens, budget, stop_token_ids=stop, min_match=min_match, min_score=min_score
        )
        want = brute_suffix_draft(
            [index.tokens],
            index.tokens,
            budget,
            depth=depth,
            min_match=min_match,
            min_score=min_score,
            stop=stop,
        )
        assert got.tokens == want[0] and got.score == pytest.approx(want[1])


@pytest.mark.parametrize("seed", range(4))
def test_suffix_drafts_with_memory_match_brute_force(seed: int) -> None:
    """The request's tree and the memory's each drafted as the brute force; the higher score wins
    (ties: the request's); the memory holds the newest outputs within its capacity."""
    rng = random.Random(200 + seed)
    alphabet, depth, capacity = 3, rng.randint(3, 6), rng.randint(10, 40)
    memory = OutputMemory(capacity, depth)
    outputs: list[list[int]] = []
    for _ in range(12):
        output = [rng.randrange(alphabet) for _ in range(rng.randint(1, 15))]
        memory.add(output)
        outputs.append(output)
        kept = _newest_within(outputs, capacity)
        assert [list(o) for o in memory.outputs] == kept
        assert memory.tree.nodes == _fresh_nodes(kept, depth), "removed windows leave no nodes behind"
        context = [rng.randrange(alphabet) for _ in range(rng.randint(1, 12))]
        request = SuffixIndex(depth)
        request.extend(context)
        got = suffix_draft([request.tree, memory.tree], context, 6, min_match=1, min_score=0.1)
        own = brute_suffix_draft([context], context, 6, depth=depth, min_match=1, min_score=0.1, stop=())
        remembered = brute_suffix_draft(kept, context, 6, depth=depth, min_match=1, min_score=0.1, stop=())
        best = own if own[1] >= remembered[1] else remembered
        if best[1] == 0.0:
            best = ((), 0.0)
        assert got.tokens == best[0] and got.score == pytest.approx(best[1])


def _newest_within(outputs: list[list[int]], capacity: int) -> list[list[int]]:
    kept: list[list[int]] = []
    total = 0
    for output in reversed(outputs):
        tail = output[max(0, len(output) - capacity) :]
        if total + len(tail) > capacity:
            break
        kept.insert(0, tail)
        total += len(tail)
    return kept


def _fresh_nodes(strings: list[list[int]], depth: int) -> int:
    tree = SuffixTree(depth)
    for string in strings:
        tree.insert(string)
    return tree.nodes


def test_a_draft_stops_at_the_stop_token_and_keeps_it() -> None:
    index = SuffixIndex(8)
    index.extend([1, 2, 3, 9, 4, 1, 2])
    assert suffix_draft([index.tree], index.tokens, 6, stop_token_ids={9}).tokens == (3, 9)
    assert suffix_draft([index.tree], index.tokens, 6).tokens == (3, 9, 4, 1, 2, 3)
