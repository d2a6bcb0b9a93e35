"""The drafter -> target intersection map on toy tokenizers of two schemes."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.vocab.canonical import TokenKind
from coordinator.vocab.intersection import (
    NOT_IN_INTERSECTION,
    IntersectionMap,
    build_intersection,
    check_intersection_decodes,
)
from core.errors import InvalidArgumentError
from tests.unit.vocab.conftest import NamedVocabs

PAIRS = [("byte_level", "sentencepiece"), ("sentencepiece", "byte_level"), ("prepend", "sentencepiece")]


@pytest.mark.parametrize(("drafter_name", "target_name"), PAIRS)
def test_map_is_injective_and_joins_equal_bytes_only(
    toy_vocabs: NamedVocabs, drafter_name: str, target_name: str
) -> None:
    drafter, target = toy_vocabs[drafter_name], toy_vocabs[target_name]
    intersection = build_intersection(drafter, target)
    drafter_ids, target_ids = intersection.mapped_pairs()
    assert intersection.drafter_to_target.dtype == np.int64
    assert intersection.drafter_to_target.shape == (drafter.size,)
    assert len(set(target_ids.tolist())) == len(target_ids) > 100
    for drafter_id, target_id in zip(drafter_ids.tolist(), target_ids.tolist(), strict=True):
        assert drafter.token_bytes[drafter_id] == target.token_bytes[target_id]
        assert drafter.kinds[drafter_id] != TokenKind.SPECIAL
        assert target.kinds[target_id] != TokenKind.SPECIAL
    # Every byte string both vocabularies spell with one token is in the intersection exactly once.
    shared = set(drafter.representative) & set(target.representative)
    assert intersection.mapped_count == len(shared)
    assert intersection.coverage == pytest.approx(len(shared) / drafter.size)


@pytest.mark.parametrize(("drafter_name", "target_name"), PAIRS)
def test_every_mapped_pair_decodes_identically(
    toy_vocabs: NamedVocabs, drafter_name: str, target_name: str
) -> None:
    drafter, target = toy_vocabs[drafter_name], toy_vocabs[target_name]
    check = check_intersection_decodes(drafter, target, build_intersection(drafter, target))
    assert check.ok, check.mismatches[:5]
    assert check.in_context_checked == build_intersection(drafter, target).mapped_count
    assert 0 < check.alone_checked < check.in_context_checked  # fragments are checked in context only


def test_a_scrambled_map_is_caught_by_the_decode_check(toy_vocabs: NamedVocabs) -> None:
    drafter, target = toy_vocabs["byte_level"], toy_vocabs["sentencepiece"]
    good = build_intersection(drafter, target)
    drafter_ids, target_ids = good.mapped_pairs()
    scrambled = good.drafter_to_target.copy()
    scrambled[drafter_ids] = np.sort(target_ids)[::-1]  # the right ids in the wrong columns
    check = check_intersection_decodes(drafter, target, IntersectionMap(scrambled, drafter.size, target.size))
    # Swapped pairs of lone UTF-8 fragments both decode to U+FFFD and escape; nothing else does.
    escaped = len(drafter_ids) - len(check.mismatches)
    fragments = sum(1 for d in drafter_ids if (drafter.token_bytes[d] or b"")[:1] >= b"\x80")
    assert escaped <= fragments


def test_special_tokens_and_duplicate_bytes_stay_unmapped(toy_vocabs: NamedVocabs) -> None:
    drafter, target = toy_vocabs["sentencepiece"], toy_vocabs["byte_level"]
    mapping = build_intersection(drafter, target).drafter_to_target
    assert all(mapping[i] == NOT_IN_INTERSECTION for i in range(3))  # <unk>, <s>, </s>
    letter = drafter.representative[b"a"]
    byte_a = drafter.tokenizer.token_to_id("<0x61>")
    assert mapping[letter] == target.representative[b"a"]
    assert mapping[byte_a] == NOT_IN_INTERSECTION
    # A lone lead byte maps onto the byte-level vocabulary's lone byte token.
    assert mapping[drafter.tokenizer.token_to_id("<0xE6>")] == target.representative[b"\xe6"]


def test_rows_beyond_the_tokenizers_are_padding(toy_vocabs: NamedVocabs) -> None:
    drafter, target = toy_vocabs["byte_level"], toy_vocabs["sentencepiece"]
    padded = build_intersection(drafter, target, drafter_rows=drafter.size + 64, target_rows=target.size + 7)
    plain = build_intersection(drafter, target)
    assert padded.drafter_to_target.shape == (drafter.size + 64,)
    assert (padded.drafter_to_target[drafter.size :] == NOT_IN_INTERSECTION).all()
    assert np.array_equal(padded.drafter_to_target[: drafter.size], plain.drafter_to_target)
    assert padded.coverage == plain.coverage
    narrow = build_intersection(drafter, target, target_rows=200)
    assert narrow.mapped_count < plain.mapped_count
    assert (narrow.mapped_pairs()[1] < 200).all()
    inverse = plain.target_to_drafter()
    drafter_ids, target_ids = plain.mapped_pairs()
    assert np.array_equal(inverse[target_ids], drafter_ids)
    assert (np.delete(inverse, target_ids) == NOT_IN_INTERSECTION).all()


def test_invalid_rows_are_rejected(toy_vocabs: NamedVocabs) -> None:
    with pytest.raises(InvalidArgumentError, match="drafter_rows"):
        build_intersection(toy_vocabs["byte_level"], toy_vocabs["prepend"], drafter_rows=0)
    with pytest.raises(InvalidArgumentError, match="target_rows"):
        build_intersection(toy_vocabs["byte_level"], toy_vocabs["prepend"], target_rows=-3)
