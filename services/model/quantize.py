"""Int8 linear layers for CPU drafters, with torch's own int8 kernels.

A drafter's precision changes how fast it drafts and how often its drafts are accepted, never the output
law: every token is decided against the target's distribution. Two ways, both torch's kernels:

- ``int8-dynamic``: ``torch.ao.quantization.quantize_dynamic`` (FBGEMM): int8 weights with one scale per
  output channel (per-tensor scales lost Qwen2.5-Coder-0.5B much of its greedy agreement with the float
  model) and activations quantized to int8 per call, int32 accumulation; float32 in and out. The fastest
  drafter step measured on this project's AVX2 CPU, at the float drafter's acceptance
  (docs/benchmarks/notes.md).
  torch 2.13 marks its quantized tensors deprecated (to be removed in a later release, pytorch issue
  184982); the pinned torch has them, and the unit tests fail on a torch that does not.
- ``int8-weight-only``: int8 weights with one scale per output channel, activations in the model's dtype
  (bfloat16 or float32), computed by ATen's ``_weight_int8pack_mm``.

torchao's ``Int8WeightOnlyConfig`` (``quantize_``) was tried first: in eager mode its linear converts the
whole int8 weight to the activation dtype on every call and leaves the fusion to ``torch.compile``, which
the service does not run (its forwards change shape every call); it made a drafter step 2-3 times slower
than float32, so it is not used.
"""

from __future__ import annotations

import warnings
from typing import Any

import structlog
import torch
from torch import nn

from services.model.settings import Quantize

log = structlog.get_logger(__name__)

_INT8_MAX = 127.0


class Int8WeightOnlyLinear(nn.Module):
    """A linear layer with int8 weights (one scale per output channel) and float activations."""

    weight_int8: torch.Tensor  # [out_features, in_features]
    scales: torch.Tensor  # [out_features], in the activations' dtype
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        with torch.no_grad():
            weight = linear.weight.detach().to(torch.float32)
            scales = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / _INT8_MAX
            quantized = torch.round(weight / scales[:, None]).clamp(-_INT8_MAX, _INT8_MAX)
        dtype = linear.weight.dtype
        self.register_buffer("weight_int8", quantized.to(torch.int8).contiguous())
        self.register_buffer("scales", scales.to(dtype))
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        output = torch._weight_int8pack_mm(rows, self.weight_int8, self.scales)
        if self.bias is not None:
            output = output + self.bias
        return output.reshape(*x.shape[:-1], self.out_features)


def quantize_linears(model: Any, quantize: Quantize) -> Any:
    """The model with its ``nn.Linear`` layers quantized (the same object, changed in place, except for
    ``int8-dynamic``, whose torch function returns a new module); ``none`` leaves it as it is."""
    if quantize == "none":
        return model
    if quantize == "int8-dynamic":
        with warnings.catch_warnings():  # the deprecation notices of torch.ao (see the module docstring)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            quantized: Any = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                model, {nn.Linear: qconfig}, dtype=torch.qint8
            )
        log.info("quantized", quantize=quantize)
        return quantized
    layers = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8WeightOnlyLinear(child))
                layers += 1
    log.info("quantized", quantize=quantize, layers=layers)
    return model
