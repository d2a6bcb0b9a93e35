"""Suffix-tree drafting (after SuffixDecoding, Oliaro et al., arXiv 2411.04975).

A ``SuffixTree`` holds every window of at most ``depth`` tokens of the strings inserted into it, as a
trie in which each node counts how often its path occurs (a suffix tree truncated at ``depth``). For a
node at depth L, the counts of its children are how often each token followed that L-token string.

Drafting (``suffix_draft``) extends a text one token at a time: it takes the longest suffix of the text
(context and the draft so far, at least ``min_match`` and at most ``depth - 1`` tokens) that some earlier
occurrence continues, and proposes that suffix's most frequent continuation (ties: the smallest id). The
continuation's share of the suffix's continuations is its frequency score; a draft stops at the budget, at
a stop token (kept), where no suffix is continued, or before a token that would bring the running product
of scores under ``min_score``. Between trees (the request's context, the deployment's earlier outputs)
the draft with the higher expected accepted length (the sum of its running products) wins; ties go to
the earlier tree.

``SuffixIndex`` is the tree of one growing string (a request's context, appended to as it grows);
``OutputMemory`` is a bounded first-in-first-out store of finished outputs with one tree over them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass


class _Node:
    __slots__ = ("children", "count", "depth")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.count = 0
        self.children: dict[int, _Node] = {}


class SuffixTree:
    """Counted windows of at most ``depth`` tokens of the inserted strings."""

    def __init__(self, depth: int) -> None:
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.depth = depth
        self.root = _Node(0)
        self.nodes = 1

    def step(self, open_nodes: list[_Node], token: int) -> list[_Node]:
        """Counts ``token`` after each open path (the suffixes of the string so far shorter than
        ``depth``, the root first); returns the open paths after it."""
        following: list[_Node] = []
        for node in [self.root, *open_nodes]:
            child = node.children.get(token)
            if child is None:
                child = node.children[token] = _Node(node.depth + 1)
                self.nodes += 1
            child.count += 1
            if child.depth < self.depth:
                following.append(child)
        return following

    def insert(self, tokens: Iterable[int]) -> None:
        """Counts every window of one string."""
        open_nodes: list[_Node] = []
        for token in tokens:
            open_nodes = self.step(open_nodes, int(token))

    def remove(self, tokens: Iterable[int]) -> None:
        """Uncounts every window of a string inserted before; paths no longer counted are dropped."""
        open_nodes: list[_Node] = []
        for token in tokens:
            following: list[_Node] = []
            for node in [self.root, *open_nodes]:
                child = node.children[int(token)]
                child.count -= 1
                if child.count == 0:  # every window through it was in this string: each dies once
                    del node.children[int(token)]
                    self.nodes -= 1
                if child.depth < self.depth:
                    following.append(child)
            open_nodes = following

    def continuations(self, text: Sequence[int], min_match: int) -> dict[int, _Node] | None:
        """The children of the longest suffix of ``text`` (``min_match`` to ``depth - 1`` tokens) that
        has any; None when no such suffix occurs."""
        for length in range(min(self.depth - 1, len(text)), min_match - 1, -1):
            node: _Node | None = self.root
            for token in text[len(text) - length :]:
                node = node.children.get(token) if node is not None else None
                if node is None:
                    break
            if node is not None and node.children:
                return node.children
        return None


class SuffixIndex:
    """The suffix tree of one growing token string (a request's context)."""

    def __init__(self, depth: int) -> None:
        self.tree = SuffixTree(depth)
        self.tokens: list[int] = []
        self._open: list[_Node] = []

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self.tokens.append(int(token))
            self._open = self.tree.step(self._open, int(token))


class OutputMemory:
    """Finished outputs, oldest dropped first so that at most ``capacity`` tokens are held, in one tree.

    Each output is inserted on its own (no window spans two outputs); an output longer than the
    capacity keeps its last ``capacity`` tokens.
    """

    def __init__(self, capacity: int, depth: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.tree = SuffixTree(depth)
        self.outputs: deque[tuple[int, ...]] = deque()
        self.tokens = 0

    def add(self, output: Sequence[int]) -> None:
        kept = tuple(int(t) for t in output[max(0, len(output) - self.capacity) :])
        if not kept:
            return
        while self.outputs and self.tokens + len(kept) > self.capacity:
            oldest = self.outputs.popleft()
            self.tree.remove(oldest)
            self.tokens -= len(oldest)
        self.tree.insert(kept)
        self.outputs.append(kept)
        self.tokens += len(kept)


@dataclass(frozen=True)
class Proposal:
    """A draft and its expected accepted length under the frequency scores."""

    tokens: tuple[int, ...]
    score: float


def _draft_from(
    tree: SuffixTree,
    context: Sequence[int],
    budget: int,
    *,
    stop_token_ids: Collection[int],
    min_match: int,
    min_score: float,
) -> Proposal:
    text = list(context[max(0, len(context) - tree.depth) :])  # longer suffixes are never matched
    draft: list[int] = []
    running, score = 1.0, 0.0
    while len(draft) < budget:
        children = tree.continuations(text, min_match)
        if children is None:
            break
        token, child = min(children.items(), key=lambda item: (-item[1].count, item[0]))
        share = child.count / sum(c.count for c in children.values())
        if running * share < min_score:
            break
        running *= share
        score += running
        draft.append(token)
        text.append(token)
        if token in stop_token_ids:
            break
    return Proposal(tuple(draft), score)


def suffix_draft(
    trees: Sequence[SuffixTree],
    context: Sequence[int],
    budget: int,
    *,
    stop_token_ids: Collection[int] = (),
    min_match: int = 1,
    min_score: float = 0.0,
) -> Proposal:
    """The best draft of up to ``budget`` tokens after ``context`` over the trees (module docstring)."""
    best = Proposal((), 0.0)
    for tree in trees:
        proposal = _draft_from(
            tree,
            context,
            budget,
            stop_token_ids=stop_token_ids,
            min_match=max(1, min_match),
            min_score=min_score,
        )
        if proposal.score > best.score:
            best = proposal
    return best
