"""Settings of one lookup drafter (validated, frozen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.serving.server import GrpcServerSettings

LookupKind = Literal["ngram", "suffix"]


class LookupServiceSettings(BaseModel):
    """A model-free drafter: what it looks up, over which target's tokenizer, its limits and transport."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    kind: LookupKind = Field(description="ngram (prompt lookup) or suffix (suffix-tree drafting).")
    target_model_dir: Path = Field(
        description="The target's local model folder: its tokenizer, vocabulary width, stop tokens and "
        "context limit are this drafter's."
    )
    model_name: str = Field("", description="Name reported by Info; defaults to the kind.", max_length=200)
    ngram_min: int = Field(2, ge=1, le=64, description="Shortest n-gram match that proposes (ngram).")
    ngram_max: int = Field(4, ge=1, le=64, description="Longest n-gram match tried first (ngram).")
    suffix_depth: int = Field(
        16, ge=2, le=256, description="Depth of the suffix tree: matches of up to depth - 1 tokens (suffix)."
    )
    suffix_min_match: int = Field(
        2, ge=1, le=255, description="Shortest suffix match that proposes (suffix)."
    )
    suffix_min_score: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="A suffix draft stops before the running product of its tokens' continuation "
        "frequencies would fall under this (suffix).",
    )
    cross_request_memory_tokens: int = Field(
        0,
        ge=0,
        le=1 << 26,
        description="suffix only: keep the generated tokens of finished sequences, up to this many (oldest "
        "dropped first), and draft from them too; 0 = off.",
    )
    max_draft_tokens: int = Field(16, ge=1, le=1024, description="Largest max_draft_tokens accepted.")
    cache_budget_tokens: int = Field(
        262_144, ge=1, description="Context tokens indexed over all sequences; least recently used go first."
    )
    cache_ttl_seconds: float = Field(600.0, gt=0, description="Idle time after which a sequence is dropped.")
    max_queue: int = Field(64, ge=1, description="Pending requests before RESOURCE_EXHAUSTED.")
    max_token_masks: int = Field(
        16, ge=1, le=4096, description="Token masks (SetTokenMask) held; the least recently used go first."
    )
    grpc: GrpcServerSettings = Field(default_factory=GrpcServerSettings)
    metrics_host: str = Field("127.0.0.1", description="Address of the metrics endpoint.")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="None = no metrics endpoint.")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("model_name") and data.get("kind"):
            return {**data, "model_name": str(data["kind"])}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> LookupServiceSettings:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min ({self.ngram_min}) must not exceed ngram_max ({self.ngram_max})")
        if self.suffix_min_match >= self.suffix_depth:
            raise ValueError(
                f"suffix_min_match ({self.suffix_min_match}) must be below suffix_depth ({self.suffix_depth})"
            )
        if self.kind != "suffix" and self.cross_request_memory_tokens:
            raise ValueError("cross_request_memory_tokens needs kind suffix")
        return self
