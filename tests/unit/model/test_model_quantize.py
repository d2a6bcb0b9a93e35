"""Int8 drafters: every linear layer quantized, the precision in Info, logits near the float model's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from core.modelcalls import ContextRef, DraftCall
from core.sampling import SamplingConfig
from services.model.engine import ModelEngine
from services.model.quantize import Int8WeightOnlyLinear
from services.model.settings import DType, ModelServiceSettings, Quantize
from services.model.wire import info_response
from tests.support.tiny_models import load_reference, reference_logits

CONTEXT = [3 + (7 * i) % 250 for i in range(20)]


def test_int8_weight_only_linear_is_within_the_quantization_error() -> None:
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(64, 48)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(48, 64, generator=generator))
        linear.bias.copy_(torch.randn(48, generator=generator))
    quantized = Int8WeightOnlyLinear(linear)
    assert quantized.weight_int8.dtype == torch.int8
    x = torch.randn(2, 3, 64, generator=generator)  # several rows: the verification shape
    expected = linear(x)
    actual = quantized(x)
    assert actual.shape == expected.shape
    # per-channel int8: each weight is off by at most half a step (max |w| / 254)
    step = linear.weight.abs().amax(dim=1) / 127
    bound = (x.abs().sum(dim=-1, keepdim=True) * step / 2).detach()
    assert bool(((actual - expected).abs() <= bound + 1e-5).all())


@pytest.mark.parametrize(
    ("dtype", "quantize"),
    [("float32", "int8-dynamic"), ("float32", "int8-weight-only"), ("bfloat16", "int8-weight-only")],
)
def test_a_quantized_engine_reports_its_precision_and_drafts(
    llama_dir: Path, dtype: DType, quantize: Quantize
) -> None:
    engine = ModelEngine.load(ModelServiceSettings(model_dir=llama_dir, dtype=dtype, quantize=quantize))
    assert engine.info.dtype == f"{dtype}+{quantize}"
    assert info_response(engine.info).dtype == f"{dtype}+{quantize}"
    assert not [m for m in engine.model.modules() if type(m) is nn.Linear]  # every linear layer quantized

    outcome = engine.draft(DraftCall(ContextRef("q", 0, 0, tuple(CONTEXT)), 4, SamplingConfig(0.0), seed=0))
    assert len(outcome.draft_tokens) >= 1
    # the quantized logits stay close to the float model's (drafts change, the law is the target's)
    logits = reference_logits(engine.model, CONTEXT, 1)[0]
    reference = reference_logits(load_reference(llama_dir), CONTEXT, 1)[0]
    spread = float(reference.max() - reference.min())
    assert float((logits - reference).abs().max()) < 0.1 * spread


def test_an_unquantized_engine_reports_the_plain_dtype(llama_dir: Path) -> None:
    engine = ModelEngine.load(ModelServiceSettings(model_dir=llama_dir))
    assert engine.info.dtype == "float32"
