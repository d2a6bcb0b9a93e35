"""What the coordinator knows about its drafter and target: endpoints built from Info, and pair checks.

Tokenizers come from the services (``InfoResponse.tokenizer.files``), never from configuration, so
the coordinator always detokenizes and formats prompts with what the services really run. A declared
fingerprint that differs from the one a service reports refuses start-up: no silent mismatch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from polyspec.v1 import model_pb2

from services.common.errors import PolyspecError

Tokenizer = Any  # a transformers PreTrainedTokenizerBase (transformers ships no type information)


class PairMismatchError(PolyspecError):
    """A service is not what the configuration declares (refuses start-up)."""


@dataclass(frozen=True)
class FimTokenIds:
    """A tokenizer's fill-in-the-middle token ids, in PSM order."""

    prefix: int
    suffix: int
    middle: int


@dataclass(frozen=True)
class ModelEndpoint:
    """One model service as the coordinator sees it: identity, limits and its real tokenizer."""

    role: str  # "drafter" or "target"
    address: str
    model_name: str
    model_type: str
    tokenizer: Tokenizer
    fingerprint: str
    eos_token_ids: frozenset[int]
    vocab_size: int
    max_context_tokens: int
    max_draft_tokens: int
    fim: FimTokenIds | None
    emulated_forward_seconds: float

    @property
    def label(self) -> str:
        """How messages name this endpoint: "target at host:port (model)"."""
        return f"{self.role} at {self.address} ({self.model_name})"


@dataclass(frozen=True)
class ModelPair:
    """The target and, optionally, the drafter of a coordinator."""

    target: ModelEndpoint
    drafter: ModelEndpoint | None

    @property
    def same_tokenizer(self) -> bool:
        return self.drafter is not None and same_tokenizer(self.drafter, self.target)

    @property
    def emulated_latency(self) -> bool:
        endpoints = [self.target] if self.drafter is None else [self.target, self.drafter]
        return any(e.emulated_forward_seconds > 0 for e in endpoints)


def same_tokenizer(a: ModelEndpoint, b: ModelEndpoint) -> bool:
    """Whether two endpoints tokenize identically (equal fingerprints of the serialized tokenizers)."""
    return a.fingerprint == b.fingerprint


def build_tokenizer(files: Mapping[str, bytes]) -> Tokenizer:
    """Loads a tokenizer from the files a service's ``save_pretrained`` wrote (no network)."""
    from transformers import AutoTokenizer

    if not files:
        raise PairMismatchError("the service sent no tokenizer files")
    with tempfile.TemporaryDirectory(prefix="polyspec-tokenizer-") as tmp:
        root = Path(tmp)
        for name, data in files.items():
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise PairMismatchError(f"the service sent a tokenizer file with an unsafe name: {name!r}")
            path = root.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return AutoTokenizer.from_pretrained(str(root), local_files_only=True)


def _fim_token_ids(tokenizer: Tokenizer, fim: model_pb2.FimTokens) -> FimTokenIds | None:
    if not (fim.prefix and fim.suffix and fim.middle):
        return None
    ids = [tokenizer.convert_tokens_to_ids(token) for token in (fim.prefix, fim.suffix, fim.middle)]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise PairMismatchError(
            f"FIM tokens {fim.prefix!r}, {fim.suffix!r}, {fim.middle!r} are not all known"
        )
    return FimTokenIds(prefix=ids[0], suffix=ids[1], middle=ids[2])


def endpoint_from_info(role: str, address: str, info: model_pb2.InfoResponse) -> ModelEndpoint:
    """Builds the endpoint description (and its tokenizer) from a service's Info answer."""
    tokenizer = build_tokenizer(info.tokenizer.files)
    fim = _fim_token_ids(tokenizer, info.tokenizer.fim) if info.tokenizer.HasField("fim") else None
    return ModelEndpoint(
        role=role,
        address=address,
        model_name=info.model_name,
        model_type=info.model_type,
        tokenizer=tokenizer,
        fingerprint=info.tokenizer.fingerprint.lower(),
        eos_token_ids=frozenset(info.eos_token_ids),
        vocab_size=info.vocab_size,
        max_context_tokens=info.max_context_tokens,
        max_draft_tokens=info.max_draft_tokens,
        fim=fim,
        emulated_forward_seconds=info.emulated_forward_seconds,
    )


def check_declared_fingerprint(endpoint: ModelEndpoint, declared: str | None) -> None:
    """Refuses an endpoint whose tokenizer is not the declared one."""
    if declared is not None and declared.lower() != endpoint.fingerprint:
        raise PairMismatchError(
            f"{endpoint.label} uses tokenizer {endpoint.fingerprint}, "
            f"but the configuration declares {declared.lower()}"
        )
