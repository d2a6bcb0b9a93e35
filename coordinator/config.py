"""The coordinator's settings: one validated, frozen object built once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coordinator.scheduler_name import SchedulerName
from core.serving.server import GrpcServerSettings, MiB
from core.serving.tls import ClientTLS

_FINGERPRINT_CHARS = frozenset("0123456789abcdef")
# The stop-classifier artifacts shipped with the package: a folder per drafter/target pair.
SHIPPED_DISCO_ARTIFACTS = Path(__file__).resolve().parent / "disco_artifacts"


def _check_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {address!r}")
    return address


def _check_fingerprint(fingerprint: str | None) -> str | None:
    if fingerprint is None:
        return None
    lowered = fingerprint.lower()
    if len(lowered) != 64 or not set(lowered) <= _FINGERPRINT_CHARS:
        raise ValueError(f"expected a sha256 hex digest (64 hex characters), got {fingerprint!r}")
    return lowered


class CoordinatorSettings(BaseModel):
    """Where the model services are, request defaults and limits, and the coordinator's own servers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drafter_address: str | None = Field(
        None, description="host:port of the drafter service; None runs target-only decoding."
    )
    lookup_drafter_address: str | None = Field(
        None,
        description="host:port of a model-free drafter (`polyspec serve drafter --kind ngram|suffix` on the "
        "target's tokenizer) asked first every round: its draft is verified instead of the model "
        "drafter's when the cost model expects it to yield more tokens per second.",
    )
    target_addresses: tuple[str, ...] = Field(
        (), description="host:port of each target replica (a static pool)."
    )
    target_discovery: str | None = Field(
        None,
        description="Discover target replicas live instead: dns:///NAME:PORT (headless Service) or "
        "kubernetes:///SERVICE.NAMESPACE:PORT (EndpointSlice watch).",
    )
    dns_interval_seconds: float = Field(5.0, gt=0.0, description="Polling interval of dns:/// discovery.")
    drafter_tokenizer_fingerprint: str | None = Field(
        None, description="Declared sha256 of the drafter's tokenizer; a different Info refuses start-up."
    )
    target_tokenizer_fingerprint: str | None = Field(
        None, description="Declared sha256 of the target's tokenizer; a different Info refuses start-up."
    )
    default_scheduler: SchedulerName = Field(
        SchedulerName.SI,
        description="Scheduler of a request that names none: si (one round at a time), dsi (verification "
        "fanned out over the target replicas while the drafter drafts on) or auto (dsi where it pays).",
    )
    default_lookahead_k: int = Field(5, ge=1, description="Draft tokens per round when a request sets none.")
    max_lookahead_k: int = Field(16, ge=1, le=256, description="Largest lookahead a request may ask for.")
    default_confidence_threshold: float = Field(
        0.4, ge=0.0, lt=1.0, description="Threshold of the confidence lookahead when a request sets none."
    )
    disco_artifact: Path | Literal["auto"] | None = Field(
        None,
        description="Trained stop classifier (polyspec disco train): enables the disco lookahead and is "
        "auto's stop. A folder: the artifact for this drafter/target pair (trained for another pair "
        "refuses start-up). auto: the artifact under disco_artifact_dir (else the ones shipped with "
        "polyspec) trained for the pair served, picked by the models' fingerprints; none found runs "
        "without a classifier.",
    )
    disco_artifact_dir: Path | None = Field(
        None,
        description="With disco_artifact auto: look for the pair's artifact in the sub-folders of this "
        "folder instead of the ones shipped with polyspec.",
    )
    auto_confidence_threshold: float = Field(
        0.6,
        ge=0.0,
        lt=1.0,
        description="auto lookahead across vocabularies: the drafter stops after a draft token it gives "
        "less than this probability (0 never stops early).",
    )
    max_support: int = Field(
        0, ge=0, description="Support cap of each shipped draft distribution; 0 = the drafter's default."
    )
    near_tie_logit_margin: float | None = Field(
        None,
        ge=0.0,
        description="Greedy requests: record an output token as a near-tie when the target's top-2 "
        "logit margin is below this; unset, it follows the target's precision: float32 0.01, "
        "bfloat16 0.5, float16 0.25.",
    )
    max_new_tokens_cap: int = Field(4096, ge=1, description="Largest max_new_tokens a request may ask for.")
    max_prompt_bytes: int = Field(
        MiB,
        ge=1,
        description="Largest prompt a request may send, in UTF-8 bytes (the prompt, the chat messages' "
        "roles and contents, or the FIM prefix and suffix), refused before any tokenization. "
        "Tokenizing costs a few hundred bytes of memory per prompt byte (a 1 MB prompt of code "
        "grows a Qwen2.5 tokenizer's process by about 0.3 GB), so 1 MiB keeps two prompts being "
        "tokenized at once well inside a 3 GiB coordinator.",
    )
    max_prompt_tokens: int = Field(
        32768,
        ge=1,
        description="Largest prompt a request may send, in the target's tokens, refused after "
        "tokenization and before any model call (the target's context window bounds it too).",
    )
    max_concurrent_requests: int = Field(
        64,
        ge=1,
        description="Generations running at once; more wait in the admission queue (admitted before any "
        "parsing, tokenizing or model call).",
    )
    max_queued_requests: int = Field(
        64,
        ge=0,
        description="Requests waiting for a free slot (in arrival order, each until its deadline); past "
        "it a request is refused at once with RESOURCE_EXHAUSTED and a retry hint. 0: no waiting.",
    )
    call_timeout_seconds: float = Field(
        60.0,
        gt=0.0,
        description="Upper bound of one model-service call, and its timeout before the service's cost is "
        "measured (the request's deadline may cut it).",
    )
    call_timeout_factor: float = Field(
        4.0,
        ge=1.0,
        description="A model-service call times out after this many times its expected cost (measured "
        "per role: forwards and tokens, times the calls queued ahead on the replica), then goes to "
        "another replica.",
    )
    min_call_timeout_seconds: float = Field(
        2.0, gt=0.0, description="Shortest timeout of a model-service call (network and warm-up)."
    )
    eject_after_failures: int = Field(
        2,
        ge=1,
        description="Eject a replica after this many failed calls in a row (timeouts, unavailable): no "
        "calls go to it until an Info probe answers. An ejected drafter means target-only rounds.",
    )
    ejection_seconds: float = Field(
        2.0,
        gt=0.0,
        description="Time before an ejected replica's first probe; doubles each time a reinstated "
        "replica is ejected again (up to a minute).",
    )
    call_retry_seconds: float = Field(
        30.0,
        ge=0.0,
        description="How long a target call keeps re-sending (every replica failed: back off, try again, "
        "ejected ones included when no other is left) before the request fails with UNAVAILABLE; the "
        "request's deadline cuts it.",
    )
    release_timeout_seconds: float = Field(5.0, gt=0.0, description="Bound of the Release calls at the end.")
    startup_timeout_seconds: float = Field(
        120.0, gt=0.0, description="How long start-up waits for the model services to answer Info."
    )
    max_message_bytes: int = Field(
        64 * MiB, ge=MiB, le=2**31 - 1, description="Cap on one message to or from a model service."
    )
    model_tls: ClientTLS | None = Field(
        None,
        description="TLS (mutual TLS with a client certificate) to the model services; None: plaintext "
        "(only inside a mesh that encrypts and authenticates traffic).",
    )
    auth_token_file: Path | None = Field(
        None, description="Require this bearer token (read from the file at start-up) on every call."
    )
    auth_token_env: str | None = Field(
        None,
        min_length=1,
        description="Require the bearer token held by this environment variable on every call.",
    )
    grpc: GrpcServerSettings = Field(default_factory=GrpcServerSettings)  # type: ignore[arg-type]
    metrics_host: str = Field("127.0.0.1", description="Address of the Prometheus endpoint.")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Port of the Prometheus endpoint; 0 picks one; None disables it."
    )

    @field_validator("drafter_address", "lookup_drafter_address")
    @classmethod
    def _drafter_address(cls, value: str | None) -> str | None:
        return None if value is None else _check_address(value)

    @field_validator("target_addresses")
    @classmethod
    def _target_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            _check_address(address)
        if len(set(value)) != len(value):
            raise ValueError("target addresses must be distinct")
        return value

    @field_validator("target_discovery")
    @classmethod
    def _target_discovery(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("dns:///", "kubernetes:///")):
            raise ValueError(
                f"expected dns:///NAME:PORT or kubernetes:///SERVICE.NAMESPACE:PORT, got {value!r}"
            )
        return value

    @field_validator("drafter_tokenizer_fingerprint", "target_tokenizer_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        return _check_fingerprint(value)

    @model_validator(mode="after")
    def _lookahead_bounds(self) -> Self:
        if self.default_lookahead_k > self.max_lookahead_k:
            raise ValueError(
                f"default_lookahead_k ({self.default_lookahead_k}) exceeds "
                f"max_lookahead_k ({self.max_lookahead_k})"
            )
        if bool(self.target_addresses) == (self.target_discovery is not None):
            raise ValueError(
                "give the targets either as target_addresses or as target_discovery (exactly one)"
            )
        if self.drafter_address is None and self.drafter_tokenizer_fingerprint is not None:
            raise ValueError("drafter_tokenizer_fingerprint is set but no drafter_address is")
        if self.drafter_address is None and self.disco_artifact is not None:
            raise ValueError(
                "disco_artifact is set but no drafter_address is (the classifier stops a drafter)"
            )
        if self.disco_artifact_dir is not None and self.disco_artifact != "auto":
            raise ValueError(
                "disco_artifact_dir is set but disco_artifact is not auto (the folder is searched only by "
                "disco_artifact=auto)"
            )
        if self.min_call_timeout_seconds > self.call_timeout_seconds:
            raise ValueError(
                f"min_call_timeout_seconds ({self.min_call_timeout_seconds}) exceeds "
                f"call_timeout_seconds ({self.call_timeout_seconds})"
            )
        if self.auth_token_file is not None and self.auth_token_env is not None:
            raise ValueError("give the bearer token as auth_token_file or auth_token_env, not both")
        return self
