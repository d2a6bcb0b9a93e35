"""Cross-vocabulary candidates from a draft (pure): TLI's mapping, SLEM's re-tokenization, SLRS's psi."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from coordinator.loop.translate import (
    UnusableDraftError,
    drafted_bytes,
    look_behind,
    slem_candidates,
    slem_covered_drafts,
    slrs_candidates,
    text_bytes,
    tli_candidates,
)
from coordinator.verify.slrs import TokenTrie
from coordinator.vocab import CanonicalVocab
from tests.support.toy_tokenizers import byte_level_transformers, sentencepiece_transformers


@pytest.fixture(scope="module")
def vocabs() -> tuple[Any, CanonicalVocab, Any, CanonicalVocab]:
    target, drafter = byte_level_transformers(), sentencepiece_transformers()
    return (
        target,
        CanonicalVocab.from_tokenizer(target, target.all_special_ids),
        drafter,
        CanonicalVocab.from_tokenizer(drafter, drafter.all_special_ids),
    )


def test_tli_maps_tokens_and_proposals_into_target_ids() -> None:
    drafter_to_target = np.array([-1, 7, 3, -1, 5], dtype=np.int64)
    candidates = tli_candidates([1, 4], [([1, 2, 3], [0.6, 0.4, 0.0]), ([4], [1.0])], drafter_to_target)
    assert candidates.tokens == (7, 5)
    assert candidates.proposals is not None
    assert [(p.token_ids, p.probs) for p in candidates.proposals] == [((7, 3), (0.6, 0.4)), ((5,), (1.0,))]
    assert candidates.candidate_draft_probs == (0.6, 1.0)
    with pytest.raises(UnusableDraftError, match="outside the intersection"):
        tli_candidates([1], [([1, 3], [0.5, 0.5])], drafter_to_target)  # unmasked mass
    with pytest.raises(UnusableDraftError, match="probability"):
        tli_candidates([2], [([1], [1.0])], drafter_to_target)  # the token is not in its proposal


def test_slem_retokenizes_the_drafted_text_for_the_target(
    vocabs: tuple[Any, CanonicalVocab, Any, CanonicalVocab],
) -> None:
    target, target_vocab, drafter, drafter_vocab = vocabs
    committed = target("def fibonacci(n):\n")["input_ids"]
    draft = drafter("    return fibonacci", add_special_tokens=False)["input_ids"]
    drafted = drafted_bytes(drafter_vocab, [*draft, drafter.eos_token_id, *draft])
    assert drafted == b"    return fibonacci"  # cut at the stop token
    common = {"target_context": committed, "max_candidates": 20, "target_rows": len(target)}
    candidates = slem_candidates(drafter_vocab, target_vocab, draft, pending=b"", **common)
    assert text_bytes(target_vocab, candidates.tokens) == b"    return fibonacci"
    assert candidates.proposals is None  # exact match
    capped = slem_candidates(
        drafter_vocab, target_vocab, draft, pending=b"", **{**common, "max_candidates": 1}
    )
    assert capped.tokens == candidates.tokens[:1]
    # The committed text ends with bytes the drafter did not see: drafts must begin with them.
    assert slem_candidates(drafter_vocab, target_vocab, draft, pending=b"xyz", **common).tokens == ()
    started = slem_candidates(drafter_vocab, target_vocab, draft, pending=b"    ", **common)
    assert text_bytes(target_vocab, started.tokens) == b"return fibonacci"


def test_slem_covered_drafts_count_the_draft_tokens_inside_the_accepted_text(
    vocabs: tuple[Any, CanonicalVocab, Any, CanonicalVocab],
) -> None:
    target, target_vocab, drafter, drafter_vocab = vocabs
    draft = drafter("    return fibonacci", add_special_tokens=False)["input_ids"]
    pieces = [drafter_vocab.token_bytes[t] or b"" for t in draft]
    ends = [len(b"".join(pieces[: j + 1])) for j in range(len(draft))]

    def covered(text: bytes, pending: bytes = b"", tokens: list[int] = draft) -> int:
        accepted = target(text[len(pending) :].decode(), add_special_tokens=False)["input_ids"]
        return slem_covered_drafts(
            drafter_vocab, target_vocab, tokens, pending=pending, accepted_candidates=accepted
        )

    assert covered(b"    return fibonacci") == len(draft)
    for cut in range(1, len(b"    return fibonacci")):  # accepted text cut anywhere: the tokens inside it
        assert covered(b"    return fibonacci"[:cut]) == sum(end <= cut for end in ends), cut
    assert covered(b"    return fibonacci", pending=b"    ") == len(draft)  # pending counts as covered
    assert covered(b"    returned") == sum(end <= len(b"    return") for end in ends)  # text differs
    assert covered(b"    return fibonacci", tokens=[draft[0], drafter.eos_token_id, *draft[1:]]) == 1


def test_look_behind_stops_at_ids_beyond_the_tokenizer(
    vocabs: tuple[Any, CanonicalVocab, Any, CanonicalVocab],
) -> None:
    _, target_vocab, _, _ = vocabs
    assert look_behind(target_vocab, [5, 6, target_vocab.size + 3, 7, 8]) == [7, 8]
    assert len(look_behind(target_vocab, list(range(40, 100)))) < 60


def test_slrs_candidates_carry_psi_at_the_proposed_token(
    vocabs: tuple[Any, CanonicalVocab, Any, CanonicalVocab],
) -> None:
    _, target_vocab, drafter, drafter_vocab = vocabs
    trie = TokenTrie(target_vocab.token_bytes)
    tokens = drafter("    return", add_special_tokens=False)["input_ids"]
    other = drafter(" if", add_special_tokens=False)["input_ids"][-1]
    supports = [([token, other], [0.75, 0.25]) for token in tokens]
    result = slrs_candidates(trie, drafter_vocab, tokens, supports, max_candidates=8, enumeration_budget=100)
    assert not result.over_budget and result.candidates.tokens
    assert result.candidates.proposals is not None
    for token, proposal, at in zip(
        result.candidates.tokens,
        result.candidates.proposals,
        result.candidates.candidate_draft_probs,
        strict=True,
    ):
        assert at == proposal.probs[proposal.token_ids.index(token)] > 0
        assert sum(proposal.probs) == pytest.approx(1.0, abs=1e-6)
    over = slrs_candidates(trie, drafter_vocab, tokens, supports, max_candidates=8, enumeration_budget=1)
    assert over.over_budget and over.candidates.tokens == ()
