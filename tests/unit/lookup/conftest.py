"""A tiny model folder whose tokenizer and config a lookup drafter reads (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_models import build_word_model


@pytest.fixture(scope="session")
def target_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_word_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama", seed=1)
