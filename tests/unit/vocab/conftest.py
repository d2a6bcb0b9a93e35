"""Toy tokenizers and their canonical tables, built once per session."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.vocab.canonical import CanonicalVocab
from tests.support.toy_tokenizers import byte_level_toy, prepend_toy, sentencepiece_toy

TOY_BUILDERS = {"byte_level": byte_level_toy, "sentencepiece": sentencepiece_toy, "prepend": prepend_toy}


class NamedVocabs:
    """Name -> canonical table, with a short repr (hypothesis prints test arguments on failure)."""

    def __init__(self, vocabs: dict[str, CanonicalVocab]) -> None:
        self._vocabs = vocabs

    def __getitem__(self, name: str) -> CanonicalVocab:
        return self._vocabs[name]

    def __repr__(self) -> str:
        return f"NamedVocabs({', '.join(sorted(self._vocabs))})"


@pytest.fixture(scope="session")
def toy_tokenizers() -> dict[str, Any]:
    """Name -> trained toy ``tokenizers.Tokenizer``."""
    return {name: build() for name, build in TOY_BUILDERS.items()}


@pytest.fixture(scope="session")
def toy_vocabs(toy_tokenizers: dict[str, Any]) -> NamedVocabs:
    """Name -> canonical table of the toy tokenizer."""
    return NamedVocabs({name: CanonicalVocab.from_tokenizer(t) for name, t in toy_tokenizers.items()})
