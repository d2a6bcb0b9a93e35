"""oneDNN linear kernels: same logits as torch's kernels, every linear layer converted, tied weights kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import DynamicCache

from services.model.kernels import OneDnnLinear, apply_linear_kernel, onednn_available
from services.model.settings import LinearKernel
from tests.support.tiny_models import build_word_model, load_reference

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN linear kernel")

TOKENS = [3 + (13 * i) % 250 for i in range(12)]


@pytest.fixture(scope="module")
def bigcode_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_word_model(tmp_path_factory.mktemp("tiny") / "tiny-bigcode", "gpt_bigcode", seed=3)


def _logits(model: Any, prefix: list[int], rest: list[int]) -> torch.Tensor:  # [len(rest), vocab]
    """Logits of ``rest`` fed after a cached ``prefix`` in one forward (the verification shape)."""
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([prefix]), cache=cache, use_cache=True)
        output = model(input_ids=torch.tensor([rest]), cache=cache, use_cache=True)
    logits: torch.Tensor = output.logits[0].float()
    return logits


def _linear_layers(model: Any) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, nn.Linear)]


@pytest.mark.parametrize("kernel", ["onednn", "onednn-packed"])
@pytest.mark.parametrize("model_fixture", ["llama_dir", "gemma_dir", "bigcode_dir"])
def test_onednn_kernels_match_torch_on_single_and_multi_token_forwards(
    kernel: LinearKernel, model_fixture: str, request: pytest.FixtureRequest
) -> None:
    directory: Path = request.getfixturevalue(model_fixture)
    reference = load_reference(directory)
    converted = load_reference(directory)
    assert apply_linear_kernel(converted, kernel, device="cpu", dtype=torch.float32) == kernel

    layers = _linear_layers(converted)
    assert layers and all(type(layer) is OneDnnLinear for layer in layers)
    assert all((layer.packed_weight is not None) == (kernel == "onednn-packed") for layer in layers)
    for rest in ([TOKENS[-1]], TOKENS[-5:]):  # one row (decode) and several rows (verification)
        prefix = TOKENS[: len(TOKENS) - len(rest)]
        expected = _logits(reference, prefix, rest)
        actual = _logits(converted, prefix, rest)
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_tied_weights_stay_tied_and_the_state_dict_is_unchanged(llama_dir: Path) -> None:
    model = load_reference(llama_dir)
    keys = set(model.state_dict())
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    apply_linear_kernel(model, "onednn-packed", device="cpu", dtype=torch.float32)
    assert set(model.state_dict()) == keys
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied


@pytest.mark.parametrize(
    ("kernel", "device", "dtype"),
    [("torch", "cpu", torch.float32), ("onednn", "cpu", torch.bfloat16), ("onednn", "cuda", torch.float32)],
)
def test_torch_kernels_stay_where_onednn_does_not_apply(
    llama_dir: Path, kernel: LinearKernel, device: str, dtype: torch.dtype
) -> None:
    model = load_reference(llama_dir)
    assert apply_linear_kernel(model, kernel, device=device, dtype=dtype) == "torch"
    assert all(type(layer) is nn.Linear for layer in _linear_layers(model))
