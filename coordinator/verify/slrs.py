"""SLRS — string-level rejection sampling across vocabularies (Timor et al., ICML 2025, arXiv 2502.05202,
Alg. 3), with an exactly computable proposal law psi.

SLRS verifies *target* tokens proposed from the drafter's *string*: a proposed target token t is accepted
with probability min(1, target_probs(t) / psi(t)); at the first rejection the recovered token is drawn from
normalize(max(target_probs - psi, 0)). That is lossless only if psi is exactly the law of the proposed
token under the drafting process actually run (ALGORITHMS.md §3). polyspec runs this process, whose law is
a finite sum over the drafter's (exact, sparse) proposal at one drafter step:

Process (state: ``leftover``, the drafted bytes not yet turned into target tokens; empty after re-sync):
  1. While ``leftover`` is *decided* — non-empty and no target token has it as a proper prefix, so no
     further byte can change its longest target-token prefix — propose t = LTP(leftover) with
     psi = point mass, and drop t's bytes from ``leftover``. If no target token spells its first byte
     (LTP is empty), the process ends: that is read off drafter-side bytes already drawn, before the
     draw at the next position.
  2. Otherwise take the next drafter step: the drafter sampled d from its sparse proposal q. If d is a
     stop token (special, empty, or leaving no target-token prefix) the process ends. Else propose
     t = LTP(leftover + bytes(d)) with
        psi(t') = sum_{d' in support(q), d' proposable} q(d') [LTP(leftover + bytes(d')) = t'] / Z,
     Z = q-mass of the proposable tokens (the stop decision is drafter-side only, so conditioning on
     "a proposal is made" keeps the law exact), and set leftover = (leftover + bytes(d))[len(t):].
LTP(s) = the longest target token whose canonical bytes are a prefix of s.

Each position's proposal law depends on drafter-side history only, so the standard rejection argument
gives the target's law position by position (Leviathan et al., arXiv 2211.17192). The same target Score
call as speculative sampling verifies it: candidates = the proposed target ids, draft_probs = psi.

Compared with the paper's psi, which sums over every segmentation of a target token into drafter tokens
(and needs a drafter forward per segmentation prefix), this process reads one drafter step per proposal:
psi needs no extra drafter forwards and is exact, at the price of lower acceptance where drafter tokens
are much shorter than the target's. ``enumeration_budget`` bounds the work per round, step by step: the
proposals stop before the first drafter step whose support would take the round's enumeration over the
budget. A step's support is fixed by the drafting history before its token is drawn, so stopping there is
a lookahead decision and keeps psi exact; judging a round by the supports of *all* its steps would not
(later supports depend on earlier draft tokens). A round whose very first step is over budget makes no
proposal and is marked ``over_budget``: the caller verifies it by SLEM instead, a choice made before any
draft token of the round was read, so the output law is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Sentinel of TokenTrie nodes: no target token ends here.
NO_TOKEN = -1


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    token_id: int = NO_TOKEN
    # True when some target token lies strictly below this node.
    has_descendant_token: bool = False


class TokenTrie:
    """A byte trie over a vocabulary's canonical token bytes (special tokens excluded: pass None)."""

    def __init__(self, token_bytes: Sequence[bytes | None]) -> None:
        self._root = _Node()
        for token_id, data in enumerate(token_bytes):
            if data:
                self._insert(data, token_id)

    def _insert(self, data: bytes, token_id: int) -> None:
        node = self._root
        for byte in data:
            node.has_descendant_token = True
            node = node.children.setdefault(byte, _Node())
        if node.token_id == NO_TOKEN or token_id < node.token_id:
            node.token_id = token_id  # duplicates keep the lowest id: deterministic

    def longest_prefix(self, data: bytes) -> tuple[int, int]:
        """(id, byte length) of the longest token that is a prefix of ``data``; (NO_TOKEN, 0) if none."""
        node, best, best_len = self._root, NO_TOKEN, 0
        for depth, byte in enumerate(data, start=1):
            child = node.children.get(byte)
            if child is None:
                break
            node = child
            if node.token_id != NO_TOKEN:
                best, best_len = node.token_id, depth
        return best, best_len

    def is_decided(self, data: bytes) -> bool:
        """True when ``data`` is non-empty and no token has it as a proper prefix (its LTP is final)."""
        if not data:
            return False
        node = self._root
        for byte in data:
            child = node.children.get(byte)
            if child is None:
                return True
            node = child
        return not node.has_descendant_token


@dataclass(frozen=True)
class DrafterStep:
    """One drafter step: the sampled drafter token and the exact sparse proposal it was drawn from."""

    token: int
    support_ids: Sequence[int]
    support_probs: Sequence[float]


@dataclass(frozen=True)
class SlrsProposal:
    """A proposed target token and its exact proposal law psi (sparse, in target ids)."""

    target_token: int
    psi_ids: tuple[int, ...]
    psi_probs: tuple[float, ...]
    drafter_steps_used: int  # drafter steps consumed up to and including this proposal


@dataclass(frozen=True)
class SlrsRound:
    proposals: tuple[SlrsProposal, ...]
    leftover: bytes  # drafted bytes not turned into proposals (discarded at re-sync)
    enumerated: int  # support entries enumerated (the work the budget bounds)
    over_budget: bool  # the first drafter step alone exceeded the budget: no proposal (verify by SLEM)


class SlrsProposer:
    """Turns drafter steps into target-token proposals with their exact psi (see the module docstring)."""

    def __init__(
        self,
        target_trie: TokenTrie,
        drafter_token_bytes: Sequence[bytes | None],
        max_proposals: int,
        enumeration_budget: int = 1 << 16,
    ) -> None:
        self._trie = target_trie
        self._drafter_bytes = drafter_token_bytes
        self._max_proposals = max_proposals
        self._budget = enumeration_budget

    def _read_off(self, leftover: bytes, drafter_token: int) -> tuple[int, bytes] | None:
        """(proposed target token, new leftover) for one drafter token, or None if it stops the process."""
        data = self._drafter_bytes[drafter_token] if 0 <= drafter_token < len(self._drafter_bytes) else None
        if not data:
            return None
        text = leftover + data
        token, length = self._trie.longest_prefix(text)
        if token == NO_TOKEN:
            return None
        return token, text[length:]

    def _psi(self, leftover: bytes, step: DrafterStep) -> dict[int, float]:
        psi: dict[int, float] = {}
        for drafter_token, prob in zip(step.support_ids, step.support_probs, strict=True):
            if prob <= 0.0:
                continue
            read = self._read_off(leftover, drafter_token)
            if read is not None:
                psi[read[0]] = psi.get(read[0], 0.0) + prob
        mass = sum(psi.values())
        return {t: p / mass for t, p in psi.items()} if mass > 0 else {}

    def propose(self, steps: Sequence[DrafterStep], leftover: bytes = b"") -> SlrsRound:
        """Runs the process over one round's drafter steps (in order) from ``leftover``."""
        proposals: list[SlrsProposal] = []
        enumerated = 0
        used = 0
        while len(proposals) < self._max_proposals:
            if self._trie.is_decided(leftover):
                token, length = self._trie.longest_prefix(leftover)
                if token == NO_TOKEN:  # the target cannot spell the leftover's first byte: stop here
                    break
                proposals.append(SlrsProposal(token, (token,), (1.0,), used))
                leftover = leftover[length:]
                continue
            if used >= len(steps):
                break
            step = steps[used]
            if enumerated + len(step.support_ids) > self._budget:
                # Decided by supports fixed before this step's token was drawn: psi stays exact.
                return SlrsRound(tuple(proposals), leftover, enumerated, over_budget=not proposals)
            enumerated += len(step.support_ids)
            read = self._read_off(leftover, step.token)
            if read is None:
                break
            psi = self._psi(leftover, step)
            used += 1
            token, leftover = read
            ids = tuple(sorted(psi))
            proposals.append(SlrsProposal(token, ids, tuple(psi[t] for t in ids), used))
        return SlrsRound(tuple(proposals), leftover, enumerated, over_budget=False)
