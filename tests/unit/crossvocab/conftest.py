"""Fixtures of the cross-vocabulary tests: one torch thread, the toy vocabularies built once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from coordinator.vocab.canonical import CanonicalVocab
from tests.unit.vocab.vocab_toys import byte_level_toy, sentencepiece_toy


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Runs each test with one intra-op thread: the toy tensors are small, and thread wake-ups dominate."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def target_vocab() -> CanonicalVocab:
    """The target's vocabulary: the toy byte-level BPE."""
    return CanonicalVocab.from_tokenizer(byte_level_toy())


@pytest.fixture(scope="session")
def drafter_vocab() -> CanonicalVocab:
    """The drafter's vocabulary: the toy SentencePiece BPE with byte fallback and a dummy prefix."""
    return CanonicalVocab.from_tokenizer(sentencepiece_toy())
