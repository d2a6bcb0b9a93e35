"""Linear-layer kernels for fp32 CPU inference: torch's default (MKL) or oneDNN.

Speculative decoding lives on the cost of a forward over a few tokens (the target verifies k + 1 at once,
the drafter catches up on the accepted ones). On CPUs where MKL's fp32 GEMM takes its generic path (AMD,
for one), a linear layer over 2-9 rows costs 2-4 times one row: verification is no cheaper than
decoding token by token and speculation cannot pay. oneDNN (bundled with torch, the kernels torch's own
compiler calls for CPU linear layers) keeps small-row GEMMs close to the one-row cost:

- ``onednn`` computes every ``nn.Linear`` with oneDNN on the layer's own weight (no extra memory);
- ``onednn-packed`` also keeps a copy of each weight in oneDNN's blocked layout for inputs of two or
  more rows (verification, catch-up), which is faster again there; this doubles the weights' memory;
- ``torch`` leaves the model untouched.

Numerics: results agree with ``F.linear`` to float32 rounding (the probe below checks it before any
model is converted); a service computes every request with the same kernels, so speculative and
target-only decoding through it see the same logits, as before.
"""

from __future__ import annotations

from typing import Any

import structlog
import torch
from torch import nn

from services.model.settings import LinearKernel

log = structlog.get_logger(__name__)

# The row count oneDNN's packed layout is tuned for: verification rounds feed 2-9 tokens.
_PACKED_ROWS_HINT = 8
# Largest relative difference from F.linear the probe accepts (float32 accumulation-order noise).
_PROBE_TOLERANCE = 1e-4


class OneDnnLinear(nn.Linear):
    """``nn.Linear`` computed with oneDNN; ``packed_weight`` (optional) serves multi-row inputs."""

    packed_weight: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        packed = self.packed_weight
        if packed is not None and x.numel() > x.shape[-1]:  # two or more rows
            weight = packed
        output: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, weight, self.bias, "none", [], "")
        return output


def onednn_available() -> bool:
    """Whether this torch build computes a linear layer with oneDNN and matches ``F.linear``."""
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(48, 32, generator=generator)
        bias = torch.randn(48, generator=generator)
        x = torch.randn(1, 3, 32, generator=generator)
        expected = nn.functional.linear(x, weight, bias)
        dense = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, _PACKED_ROWS_HINT)
        packed = torch.ops.mkldnn._linear_pointwise(x, packed_weight, bias, "none", [], "")
    except (AttributeError, RuntimeError) as exc:
        log.warning("onednn_linear_unavailable", reason=str(exc))
        return False
    scale = float(expected.abs().max()) or 1.0
    worst = max(float((dense - expected).abs().max()), float((packed - expected).abs().max()))
    return worst <= _PROBE_TOLERANCE * scale


def apply_linear_kernel(model: Any, kernel: LinearKernel, *, device: str, dtype: torch.dtype) -> str:
    """Switches the model's ``nn.Linear`` layers to ``kernel`` in place; returns the kernel in use.

    oneDNN kernels apply to fp32 models on the CPU only; elsewhere, or when the probe fails, the model
    keeps torch's kernels and the reason is logged.
    """
    if kernel == "torch":
        return "torch"
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        log.info("linear_kernel_not_applicable", requested=kernel, device=device, dtype=str(dtype))
        return "torch"
    if not onednn_available():
        log.warning("linear_kernel_fallback", requested=kernel, using="torch")
        return "torch"
    packed = kernel == "onednn-packed"
    layers = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            _convert(module, packed=packed)
            layers += 1
    log.info("linear_kernel", kernel=kernel, layers=layers)
    return kernel


def _convert(module: nn.Linear, *, packed: bool) -> None:
    """Turns one ``nn.Linear`` into a ``OneDnnLinear`` sharing its parameters (tied weights stay tied)."""
    module.__class__ = OneDnnLinear
    weight = None
    if packed:
        with torch.no_grad():
            weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), _PACKED_ROWS_HINT)
    module.register_buffer("packed_weight", weight, persistent=False)
