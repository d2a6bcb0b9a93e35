"""What one ``polyspec bench`` run measures (validated, frozen)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tools.bench.lookaheads import missing_artifact_error, parse_bench_lookahead
from tools.bench.prompts import Workload

LinearKernel = Literal["torch", "onednn", "onednn-packed"]  # services.model.settings.LinearKernel
DType = Literal["float32", "bfloat16", "float16"]  # services.model.settings.DType
Quantize = Literal["none", "int8-dynamic", "int8-weight-only"]  # services.model.settings.Quantize
BenchScheduler = Literal["si", "dsi"]
BenchAlgorithm = Literal["ar", "sd", "tli", "slem", "slrs", "auto"]
# transformers' in-process configurations: ``generate``, with the drafter as assistant (``assisted``:
# transformers' defaults, ``assisted-adaptive``: its adaptive confidence threshold, ``assisted-heuristic``:
# its heuristic draft length; tools/bench/assistant.py; the same vocabulary, else universal assisted
# generation), prompt lookup (``prompt_lookup_num_tokens``).
ReferenceMethod = Literal["ar", "assisted", "assisted-adaptive", "assisted-heuristic", "lookup"]
# A model-free drafter beside the model drafter (``polyspec serve drafter --kind``): ``none``, or its kind.
LookupKind = Literal["none", "ngram", "suffix"]
REFERENCE_METHODS: tuple[ReferenceMethod, ...] = (
    "ar",
    "assisted",
    "assisted-adaptive",
    "assisted-heuristic",
    "lookup",
)
BENCH_ALGORITHMS: tuple[BenchAlgorithm, ...] = ("ar", "sd", "tli", "slem", "slrs", "auto")
HUMANEVAL_TASKS = 164
MAX_REPLICAS = 8
RESULTS_DIR = Path("bench-results")


class BenchOptions(BaseModel):
    """Models, prompts, the configurations to run and where the results go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drafter: str = Field(min_length=1, description="Drafter: a model-store name or a model folder.")
    target: str = Field(min_length=1, description="Target: a model-store name or a model folder.")
    workload: Workload = Field(
        "humaneval", description="humaneval: complete each task; rewrite: repeat each function (prompts.py)."
    )
    prompts: int = Field(10, ge=1, le=HUMANEVAL_TASKS, description="HumanEval prompts to run.")
    prompt_offset: int = Field(0, ge=0, lt=HUMANEVAL_TASKS, description="First HumanEval task.")
    max_new_tokens: int = Field(64, ge=1, le=4096)
    algorithms: tuple[BenchAlgorithm, ...] = Field(
        ("ar", "sd"), min_length=1, description="Through the services; ar always runs (the baseline)."
    )
    temperatures: tuple[float, ...] = Field((0.0,), min_length=1)
    lookup: LookupKind = Field(
        "none",
        description="Also run a model-free drafter of this kind: `lookup` (it alone drafts, sd) and "
        "`ALGORITHM+lookup` (combined with the model drafter) configurations.",
    )
    lookaheads: tuple[str, ...] = Field(
        ("auto",),
        min_length=1,
        description="For drafting algorithms (tools/bench/lookaheads.py): the SDK's specs and auto+disco.",
    )
    disco_artifact: Path | None = Field(
        None,
        description="The trained stop classifier (a `polyspec disco train` folder) of the coordinator that "
        "runs disco[:K] and auto+disco; the disco lookaheads need it.",
    )
    seed: int = Field(0, ge=0, description="Prompt i runs with seed + i (services and transformers).")
    services: bool = Field(True, description="Run the configurations through the services.")
    reference: bool = Field(True, description="Also run transformers' in-process generate.")
    reference_methods: tuple[ReferenceMethod, ...] = Field(
        ("ar", "assisted"), min_length=1, description="transformers' configurations; ar always runs."
    )
    prompt_lookup_tokens: int = Field(
        10, ge=1, le=64, description="transformers' prompt lookup: prompt_lookup_num_tokens."
    )
    threads: int | None = Field(
        None, ge=1, description="torch threads of each model service and of the reference (None: default)."
    )
    linear_kernel: LinearKernel = Field(
        "onednn-packed", description="Linear kernels of both model services (serve model --linear-kernel)."
    )
    drafter_dtype: DType = Field("bfloat16", description="The drafter service's dtype (serve model --dtype).")
    target_dtype: DType = Field(
        "float32",
        description="The target service's dtype (serve model --dtype), also the transformers reference's.",
    )
    drafter_quantize: Quantize = Field(
        "int8-weight-only", description="The drafter service's int8 linear layers (serve model --quantize)."
    )
    emulate_forward_ms: float = Field(
        0.0, ge=0.0, description="BENCHMARKING FLAG: pad every target-service forward to this time."
    )
    emulate_drafter_forward_ms: float = Field(
        0.0, ge=0.0, description="BENCHMARKING FLAG: pad every drafter-service forward to this time."
    )
    replicas: tuple[int, ...] = Field(
        (),
        description="Target replica counts of the DSI benchmark (tools/bench/dsi.py); empty: the "
        "algorithms benchmark.",
    )
    schedulers: tuple[BenchScheduler, ...] = Field(
        ("si", "dsi"), min_length=1, description="The DSI benchmark's schedulers, asked per request."
    )
    out: Path | None = Field(None, description="JSON path; default bench-results/DRAFTER__TARGET.json.")
    plot: Path | None = Field(None, description="PNG path; default the JSON path with .png.")
    startup_timeout_seconds: float = Field(600.0, gt=0)
    log_dir: Path | None = Field(None, description="Keep the services' logs here.")
    log_level: str = "WARNING"

    @field_validator("temperatures")
    @classmethod
    def _finite_temperatures(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        for value in values:
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"every temperature must be a finite number >= 0, got {value}")
        return tuple(dict.fromkeys(values))

    @field_validator("algorithms")
    @classmethod
    def _baseline_first(cls, values: tuple[BenchAlgorithm, ...]) -> tuple[BenchAlgorithm, ...]:
        """Deduplicated, with ``ar`` (the baseline of speedups and greedy identity) first."""
        rest = [value for value in dict.fromkeys(values) if value != "ar"]
        return ("ar", *rest)

    @field_validator("reference_methods")
    @classmethod
    def _reference_baseline_first(cls, values: tuple[ReferenceMethod, ...]) -> tuple[ReferenceMethod, ...]:
        rest = [value for value in dict.fromkeys(values) if value != "ar"]
        return ("ar", *rest)

    @field_validator("lookaheads")
    @classmethod
    def _valid_lookaheads(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            parse_bench_lookahead(value)
        return tuple(dict.fromkeys(values))

    @field_validator("replicas")
    @classmethod
    def _replica_counts(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= value <= MAX_REPLICAS for value in values):
            raise ValueError(f"every replica count must lie in [1, {MAX_REPLICAS}], got {list(values)}")
        return tuple(sorted(set(values)))

    @model_validator(mode="after")
    def _classifier_given(self) -> BenchOptions:
        """disco[:K] and auto+disco need the artifact; an artifact must be a folder."""
        error = missing_artifact_error(self.lookaheads)
        if error and self.disco_artifact is None:
            raise ValueError(error)
        if self.disco_artifact is not None and not self.disco_artifact.is_dir():
            raise ValueError(f"disco_artifact: {self.disco_artifact} is not a folder")
        return self

    @model_validator(mode="after")
    def _something_to_run(self) -> BenchOptions:
        if not (self.services or self.reference):
            raise ValueError("nothing to run: --no-services needs the transformers reference (--reference)")
        return self

    @model_validator(mode="after")
    def _drafter_precision_applies(self) -> BenchOptions:
        """The combinations ``serve model`` accepts."""
        from services.model.settings import quantize_error

        error = quantize_error(self.drafter_quantize, self.drafter_dtype)
        if error:
            raise ValueError(f"drafter: {error}")
        return self

    @model_validator(mode="after")
    def _prompts_in_range(self) -> BenchOptions:
        if self.prompt_offset + self.prompts > HUMANEVAL_TASKS:
            raise ValueError(
                f"prompt_offset + prompts must be <= {HUMANEVAL_TASKS} (HumanEval's tasks), "
                f"got {self.prompt_offset} + {self.prompts}"
            )
        return self

    @property
    def emulating(self) -> bool:
        """Whether a benchmarking flag changes the services' speed."""
        return self.emulate_forward_ms > 0 or self.emulate_drafter_forward_ms > 0

    @property
    def static_lookahead(self) -> int | None:
        """k of the first lookahead when it is static (``K`` or ``static:K``), else None."""
        from polyspec import parse_lookahead

        lookahead = parse_lookahead(parse_bench_lookahead(self.lookaheads[0]).request)
        return lookahead.k if lookahead.policy == "static" and lookahead.k else None

    def benchmarking_flags(self) -> list[str]:
        """The active benchmarking flags, as every output labels them."""
        flags = []
        if self.emulate_forward_ms > 0:
            flags.append(
                f"BENCHMARKING FLAG --emulate-forward-ms {self.emulate_forward_ms:g}: every target-service "
                "forward is padded to this time (the transformers reference is not)"
            )
        if self.emulate_drafter_forward_ms > 0:
            flags.append(
                f"BENCHMARKING FLAG --emulate-drafter-forward-ms {self.emulate_drafter_forward_ms:g}: every "
                "drafter-service forward is padded to this time (the transformers reference is not)"
            )
        return flags

    def json_path(self, drafter_name: str, target_name: str) -> Path:
        return self.out or RESULTS_DIR / f"{drafter_name}__{target_name}.json"

    def plot_path(self, json_path: Path) -> Path:
        return self.plot or json_path.with_suffix(".png")
