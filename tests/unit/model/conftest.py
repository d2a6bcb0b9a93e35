"""Tiny model folders for the model-service tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_models import build_word_model


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_word_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama", seed=1)


@pytest.fixture(scope="session")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_word_model(tmp_path_factory.mktemp("tiny") / "tiny-gemma", "gemma3_text", seed=2)
