"""Fixtures of the cross-vocabulary tests: one torch thread, the toy vocabularies built once."""

from __future__ import annotations

import pytest

from coordinator.vocab.canonical import CanonicalVocab
from tests.support.fixtures import single_torch_thread
from tests.support.toy_tokenizers import byte_level_toy, sentencepiece_toy

__all__ = ["drafter_vocab", "single_torch_thread", "target_vocab"]


@pytest.fixture(scope="session")
def target_vocab() -> CanonicalVocab:
    """The target's vocabulary: the toy byte-level BPE."""
    return CanonicalVocab.from_tokenizer(byte_level_toy())


@pytest.fixture(scope="session")
def drafter_vocab() -> CanonicalVocab:
    """The drafter's vocabulary: the toy SentencePiece BPE with byte fallback and a dummy prefix."""
    return CanonicalVocab.from_tokenizer(sentencepiece_toy())
