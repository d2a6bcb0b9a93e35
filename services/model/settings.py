"""Settings of one model server (validated, frozen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.serving.server import GrpcServerSettings

MiB = 1024 * 1024

DType = Literal["float32", "bfloat16", "float16"]
# How fp32 CPU models compute linear layers (services.model.kernels).
LinearKernel = Literal["torch", "onednn", "onednn-packed"]
# Int8 quantization of the linear layers' weights (services.model.quantize); a drafter's precision changes
# its speed and acceptance only, never the output law (the target's weights define it).
Quantize = Literal["none", "int8-dynamic", "int8-weight-only"]


class ModelServiceSettings(BaseModel):
    """Everything a model server needs: the model, its device, cache and queue limits, transport."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_dir: Path = Field(description="Local transformers folder (config, weights, tokenizer).")
    model_name: str = Field(
        "", description="Name reported by Info; defaults to the folder name.", max_length=200
    )
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:[0-9]+)?)$", description="cpu, cuda or cuda:N.")
    dtype: DType = Field("float32", description="Weight dtype (the compute dtype when quantized).")
    quantize: Quantize = Field(
        "none",
        description="Int8 linear layers on the CPU: int8-dynamic (int8 weights and per-call int8 "
        "activations, float32 only) or int8-weight-only (int8 weights, bfloat16/float32 activations); "
        "Info's dtype then reads e.g. float32+int8-dynamic.",
    )
    cache_budget_bytes: int = Field(1024 * MiB, ge=1, description="Memory budget of all KV caches.")
    cache_ttl_seconds: float = Field(600.0, gt=0, description="Idle time after which a cache is dropped.")
    max_draft_tokens: int = Field(16, ge=1, le=1024, description="Largest max_draft_tokens accepted.")
    default_max_support: int = Field(64, ge=1, description="Draft support size when a request says 0.")
    max_queue: int = Field(64, ge=1, description="Pending requests before RESOURCE_EXHAUSTED.")
    max_token_masks: int = Field(
        16, ge=1, le=4096, description="Token masks (SetTokenMask) held; the least recently used go first."
    )
    emulated_forward_seconds: float = Field(
        0.0, ge=0.0, description="Benchmarking flag: pad each forward to this time (0 = off)."
    )
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (None = default).")
    linear_kernel: LinearKernel = Field(
        "onednn",
        description="Linear layers of fp32 CPU models: onednn (default), onednn-packed (faster multi-token "
        "forwards, twice the weights' memory) or torch (services.model.kernels).",
    )
    grpc: GrpcServerSettings = Field(default_factory=GrpcServerSettings)
    metrics_host: str = Field("127.0.0.1", description="Address of the metrics endpoint.")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="None = no metrics endpoint.")

    @model_validator(mode="after")
    def _quantize_applies(self) -> ModelServiceSettings:
        error = quantize_error(self.quantize, self.dtype, self.device)
        if error:
            raise ValueError(error)
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("model_name") and data.get("model_dir") is not None:
            name = Path(data["model_dir"]).resolve().name
            return {**data, "model_name": name or "model"}
        return data


def quantize_error(quantize: str, dtype: str, device: str = "cpu") -> str:
    """Why ``quantize`` cannot run with this dtype and device ("" when it can)."""
    if quantize == "none":
        return ""
    if device != "cpu":
        return f"quantize {quantize} runs on the cpu only, got device {device}"
    if quantize == "int8-dynamic" and dtype != "float32":
        return f"quantize int8-dynamic computes in float32, got dtype {dtype}"
    if quantize == "int8-weight-only" and dtype == "float16":
        return "quantize int8-weight-only computes in bfloat16 or float32, got dtype float16"
    return ""
