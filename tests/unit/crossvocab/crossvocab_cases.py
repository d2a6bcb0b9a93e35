"""The cross-vocabulary law tests' toy pairs, and the acceptance oracles of a first round's first position.

The target speaks byte-level BPE ids, the drafter SentencePiece ids (dummy prefix, byte fallback); both
LMs are explicit tables keyed by the text so far (``tests.support.toy_lm.TextLM``) over words both
vocabularies spell differently: ' hello', ' the', ' there' and an 'é' written as two raw bytes (' he' +
'llo' re-tokenizes as ' hello'; ' he' and 'llo' have no byte-level twin), so drafts are re-tokenized
non-trivially and a draft may end inside a character.

The oracles (ALGORITHMS.md §8.2) are written plainly from the reference warper and their own reading of
each method's first proposal, not from the code under test: TLI sums min(target_probs, restricted
draft_probs) over the intersection (``min(p, q / Z)``), SLRS sums min(target_probs, psi) with psi read off
by a brute-force longest target-token prefix, and SLEM sums target_probs(t) * P(first candidate = t) with
the first candidate taken from the target tokenizer's own encoding of the drafted text.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from coordinator.pair import ModelPair, VocabAlignment, align_pair
from coordinator.request import AlgorithmName
from coordinator.vocab import NOT_IN_INTERSECTION, CanonicalVocab, build_intersection, compare_vocabularies
from core.sampling import SamplingConfig
from tests.support.frames import aligned_pair, toy_endpoint, toy_frame
from tests.support.laws import reference_proposal, reference_warp
from tests.support.population import LawCase
from tests.support.toy_lm import RuleSpec, TextLM
from tests.support.toy_service import DirectCalls, ToyModel, bare_info

# The target: byte-level BPE ids. 'é' only as the two raw bytes C3 A9.
TARGET_RULES: tuple[RuleSpec, ...] = (
    (None, {b" the": 0.8, b" hello": 1.0, b" ": 0.3, b"he": 0.0, b" there": -0.5}),
    (b"\xc3", {b"\xa9": 2.5, b"\xc3": -1.0, b" the": -1.5}),
    (b" ", {b"\xc3": 1.0, b"he": 0.7, b" the": -0.5, b"ll": -1.0}),
    (b"he", {b"ll": 1.2, b" hello": 0.2, b" the": 0.0, b" there": -0.3}),
    (b"", {b" the": 0.6, b" there": 0.2, b" hello": 0.5, b" ": 0.3, b"he": -0.2, b"\xc3": -0.7}),
)

# The drafter: SentencePiece ids. After ' he' all its mass is on 'llo', which the target vocabulary lacks.
DRAFTER_RULES: tuple[RuleSpec, ...] = (
    (None, {b" the": 1.0, b" hello": 0.8, b" he": 0.6, b" ": 0.5, b"he": -0.5}),
    (b" he", {b"llo": 2.0}),
    (b"\xc3", {b"\xa9": 2.0, b"\xc3": -1.0}),
    (b" ", {b"\xc3": 1.0, b"he": 0.8, b" the": -1.0}),
    (b"he", {b"llo": 0.5, b"re": 1.0, b" hello": 0.3, b"ll": 0.6}),
    (b"", {b" the": 0.5, b" there": 0.3, b" hello": 0.6, b" ": 0.2, b" he": 0.4}),
)

# Characters of two and three bytes ('é' = C3 A9, '€' = E2 82 AC), spelled byte by byte by both LMs.
MULTIBYTE_TARGET_RULES: tuple[RuleSpec, ...] = (
    (None, {b" ": 0.0, b" the": 0.5, b"\xe2": 0.3, b"\xc3": 0.2}),
    (b"\xc3", {b"\xa9": 2.0, b" ": -1.0}),
    (b"\xe2\x82", {b"\xac": 2.0, b" ": -1.0}),
    (b"\xe2", {b"\x82": 2.0, b"\xa9": -1.0}),
    (b" ", {b"\xc3": 0.5, b"\xe2": 0.5, b" the": -0.5}),
    (b"", {b" ": 0.5, b" the": 0.2, b"\xe2": 0.0}),
)
MULTIBYTE_DRAFTER_RULES: tuple[RuleSpec, ...] = (
    (None, {b" ": 0.3, b"\xe2": 0.6, b"\xc3": 0.4, b" the": 0.0}),
    (b"\xc3", {b"\xa9": 1.5, b"\xac": -0.5}),
    (b"\xe2\x82", {b"\xac": 1.5, b" ": -1.0}),
    (b"\xe2", {b"\x82": 1.5, b"\xa9": -0.5}),
    (b" ", {b"\xc3": 0.8, b"\xe2": 0.8, b" the": 0.0}),
    (b"", {b" ": 0.8, b"\xe2": 0.4, b"\xc3": 0.3}),
)

# The drafter of DRAFTER_RULES that also ends texts: its end of sequence (</s>, no bytes) has mass; it is a
# stop token of the drafter (kept as a draft's last token), never proposable by SLRS, outside TLI's mask.
DRAFTER_EOS = "</s>"


def drafter_rules_with_eos(eos_id: int) -> tuple[RuleSpec, ...]:
    return (
        (None, {b" the": 1.0, b" hello": 0.8, b" he": 0.6, b" ": 0.5, eos_id: 0.7}),
        (b" he", {b"llo": 2.0, eos_id: 0.5}),
        *DRAFTER_RULES[2:-1],
        (b"", {b" the": 0.5, b" there": 0.3, b" hello": 0.6, b" ": 0.2, b" he": 0.4, eos_id: 0.9}),
    )


DISJOINT_DRAFTER_RULES: tuple[RuleSpec, ...] = (
    (None, {b" zebra": 0.5, b" quokka": 0.0, b" yak": -0.5}),
    (b"", {b" gnu": 0.3, b" zebra": 0.0, b" yak": 0.2}),
)

OUTPUT_TOKENS = 3  # every law test generates this many target tokens (max_new_tokens)


@dataclass(frozen=True, eq=False)
class CrossPair:
    """A target LM and a drafter LM over two vocabularies, aligned as the coordinator aligns them."""

    target: TextLM
    drafter: TextLM
    pair: ModelPair

    @property
    def alignment(self) -> VocabAlignment:
        assert self.pair.alignment is not None
        return self.pair.alignment

    @property
    def drafter_to_target(self) -> list[int]:
        intersection = self.alignment.intersection
        assert intersection is not None
        return [int(t) for t in intersection.drafter_to_target.tolist()]

    @property
    def target_vocab(self) -> CanonicalVocab:
        return self.target.vocab

    @property
    def drafter_vocab(self) -> CanonicalVocab:
        return self.drafter.vocab


def make_pair(
    target: TextLM, drafter: TextLM, *, checked: bool = True, drafter_eos: tuple[int, ...] = ()
) -> CrossPair:
    """The pair of two TextLMs aligned by ``align_pair``, as the coordinator aligns its pair at start-up.

    ``checked=False`` builds the alignment without ``align_pair``'s end-to-end decode check (which reads
    tokens after an 'a', a token the disjoint toy lacks); one tokenizer on both sides is aligned as two
    vocabularies, with every text token mapped to itself (the coordinator itself would run sd there).
    """
    if checked and target.vocab.tokenizer is not drafter.vocab.tokenizer:
        aligned = aligned_pair(target.vocab.tokenizer, drafter.vocab.tokenizer, drafter_eos=drafter_eos)
        return CrossPair(target, drafter, aligned)
    return CrossPair(target, drafter, _unchecked_pair(target.vocab, drafter.vocab))


def _unchecked_pair(target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab) -> ModelPair:
    target = toy_endpoint("target", target_vocab.size, tokenizer=target_vocab.tokenizer)
    drafter = toy_endpoint("drafter", drafter_vocab.size, tokenizer=drafter_vocab.tokenizer)
    itself = toy_endpoint("target", target_vocab.size, tokenizer=target_vocab.tokenizer)
    base = align_pair(target, replace(itself, fingerprint="another"))  # the target's trie, built lazily
    assert base.alignment is not None and base.alignment.intersection is None
    intersection = build_intersection(drafter_vocab, target_vocab, drafter_vocab.size, target_vocab.size)
    mask = np.asarray(intersection.drafter_to_target[: drafter_vocab.size] != NOT_IN_INTERSECTION)
    bitmap = np.packbits(mask, bitorder="little").tobytes()
    alignment = replace(
        base.alignment,
        drafter=drafter_vocab,
        match=compare_vocabularies(drafter_vocab, target_vocab, drafter_vocab.size, target_vocab.size),
        intersection=intersection,
        mask_id="tli-" + hashlib.sha256(bitmap).hexdigest()[:32],
        mask_bitmap=bitmap,
    )
    return ModelPair(target, drafter, alignment=alignment)


def cross_case(
    pair: CrossPair,
    algorithm: AlgorithmName,
    config: SamplingConfig,
    max_support: int,
    k: int,
    *,
    slrs_budget: int = 1 << 16,
    confidence_threshold: float = 0.0,
) -> LawCase:
    """A request of ``OUTPUT_TOKENS`` tokens with the pair. The prompts are one special token each (as a
    model's BOS would be), which spells no text: the LMs start from the empty text."""
    frame = toy_frame(
        algorithm,
        config,
        target=pair.pair.target,
        drafter=pair.pair.drafter,
        pair=pair.pair,
        max_new_tokens=OUTPUT_TOKENS,
        max_support=max_support,
        slrs_enumeration_budget=slrs_budget,
        target_prompt=(_special_token(pair.target_vocab),),
        drafter_prompt=(_special_token(pair.drafter_vocab),),
    )
    return LawCase(frame, pair.target, pair.drafter, k, confidence_threshold)


def direct_calls(pair: CrossPair, case: LawCase) -> DirectCalls:
    """The pair as two in-process toy model services, TLI's mask registered with the drafter."""
    target = ToyModel(pair.target, bare_info(pair.target.vocab_size))
    drafter = ToyModel(pair.drafter, bare_info(pair.drafter.vocab_size), max_support=16)
    alignment = case.frame.alignment
    assert alignment is not None
    drafter.set_token_mask(alignment.mask_id, alignment.mask_bitmap)
    return DirectCalls(target, drafter)


def _special_token(vocab: CanonicalVocab) -> int:
    """The vocabulary's first id that spells no text."""
    return next(i for i in range(vocab.size) if not vocab.is_text_token(i))


def first_target_probs(pair: CrossPair, config: SamplingConfig) -> dict[int, float]:
    """The target's warped distribution at the empty context, by target id."""
    probs = reference_warp(pair.target.support_logits(b""), config)
    return {token: float(p) for token, p in zip(pair.target.support, probs, strict=True) if p > 0}


def _drafter_proposal(
    pair: CrossPair, text: bytes, config: SamplingConfig, max_support: int
) -> dict[int, float]:
    probs = reference_proposal(pair.drafter.support_logits(text), config, max_support)
    return {token: float(p) for token, p in zip(pair.drafter.support, probs, strict=True) if p > 0}


def tli_first_acceptance(pair: CrossPair, config: SamplingConfig, max_support: int) -> float:
    """sum over the intersection of min(target_probs, draft_probs restricted to it and renormalised)."""
    mapping = pair.drafter_to_target
    logits = [
        x if mapping[token] >= 0 else -math.inf
        for token, x in zip(pair.drafter.support, pair.drafter.support_logits(b""), strict=True)
    ]
    assert any(math.isfinite(x) for x in logits), "no intersection mass at the first position"
    restricted = reference_proposal(logits, config, max_support)
    target = first_target_probs(pair, config)
    return sum(
        min(target.get(mapping[token], 0.0), float(q))
        for token, q in zip(pair.drafter.support, restricted, strict=True)
        if q > 0
    )


def tli_first_acceptance_q_over_z(pair: CrossPair, config: SamplingConfig) -> float:
    """The same oracle as sum min(p, q / Z) from the unrestricted proposal (temperature-only warpers)."""
    mapping = pair.drafter_to_target
    q = reference_warp(pair.drafter.support_logits(b""), config)
    in_intersection = np.array([mapping[token] >= 0 for token in pair.drafter.support])
    z = float(q[in_intersection].sum())
    target = first_target_probs(pair, config)
    return sum(
        min(target.get(mapping[token], 0.0), float(q[i]) / z)
        for i, token in enumerate(pair.drafter.support)
        if in_intersection[i]
    )


def longest_target_prefix(vocab: CanonicalVocab, data: bytes) -> int | None:
    """The longest target token whose bytes are a prefix of ``data`` (lowest id among equal bytes)."""
    best: tuple[int, int] | None = None
    for token, token_bytes in enumerate(vocab.token_bytes):
        if token_bytes and data.startswith(token_bytes) and (best is None or len(token_bytes) > best[0]):
            best = (len(token_bytes), token)
    return None if best is None else best[1]


def slrs_first_psi(pair: CrossPair, config: SamplingConfig, max_support: int) -> dict[int, float]:
    """psi of the first proposal from the empty context: the law of LTP(bytes of the first draft token)."""
    psi: dict[int, float] = {}
    for token, q in _drafter_proposal(pair, b"", config, max_support).items():
        data = pair.drafter_vocab.token_bytes[token]
        target_token = longest_target_prefix(pair.target_vocab, data) if data else None
        if target_token is not None:
            psi[target_token] = psi.get(target_token, 0.0) + q
    total = sum(psi.values())
    return {token: mass / total for token, mass in psi.items()}


def slrs_first_acceptance(pair: CrossPair, config: SamplingConfig, max_support: int) -> float:
    """sum over target tokens of min(target_probs, psi) at the first proposal."""
    target = first_target_probs(pair, config)
    psi = slrs_first_psi(pair, config, max_support)
    return sum(min(target.get(token, 0.0), mass) for token, mass in psi.items())


def _draft_sequences(
    pair: CrossPair, config: SamplingConfig, max_support: int, k: int
) -> Iterator[tuple[tuple[int, ...], float]]:
    """Every sequence of up to k draft tokens from the empty context with its probability (a special
    token ends the drafted text, so the enumeration stops there)."""
    frontier: list[tuple[tuple[int, ...], float]] = [((), 1.0)]
    for _ in range(k):
        grown = []
        for drafts, weight in frontier:
            if drafts and not pair.drafter_vocab.is_text_token(drafts[-1]):
                yield drafts, weight
                continue
            text = pair.drafter_vocab.bytes_of(drafts)
            for token, q in _drafter_proposal(pair, text, config, max_support).items():
                grown.append(((*drafts, token), weight * q))
        frontier = grown
    yield from frontier


def valid_prefix(data: bytes) -> bytes:
    """The longest prefix of ``data`` that is valid UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return data[: error.start]
    return data


def slem_first_candidate_law(
    pair: CrossPair, config: SamplingConfig, max_support: int, k: int
) -> dict[int | None, float]:
    """Law of the first SLEM candidate of the first round (None: no candidate), by enumeration."""
    law: dict[int | None, float] = {}
    for drafts, weight in _draft_sequences(pair, config, max_support, k):
        text = valid_prefix(pair.drafter_vocab.bytes_of(drafts)).decode("utf-8")
        ids = pair.target_vocab.tokenizer.encode(text, add_special_tokens=False).ids if text else []
        first = int(ids[0]) if ids else None
        law[first] = law.get(first, 0.0) + weight
    return law


def slem_first_acceptance(pair: CrossPair, config: SamplingConfig, max_support: int, k: int) -> float:
    """sum over t of target_probs(t) * P(first candidate = t)."""
    target = first_target_probs(pair, config)
    law = slem_first_candidate_law(pair, config, max_support, k)
    return sum(target.get(token, 0.0) * mass for token, mass in law.items() if token is not None)


def first_acceptance(
    pair: CrossPair, algorithm: AlgorithmName, config: SamplingConfig, max_support: int, k: int
) -> float:
    """The oracle of the algorithm (k: the first round's draft tokens)."""
    if algorithm is AlgorithmName.TLI:
        return tli_first_acceptance(pair, config, max_support)
    if algorithm is AlgorithmName.SLRS:
        return slrs_first_acceptance(pair, config, max_support)
    return slem_first_acceptance(pair, config, max_support, k)
