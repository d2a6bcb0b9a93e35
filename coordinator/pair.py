"""What the coordinator knows about its drafter and target: endpoints built from Info, and pair checks.

Tokenizers come from the services (``EngineInfo.tokenizer_files``, from their Info answer), never from
configuration, so the coordinator always detokenizes and formats prompts with what the services really
run. A declared fingerprint that differs from the one a service reports refuses start-up: no silent
mismatch.

Pair alignment (``align_pair``, run once at start-up, off the event loop): equal fingerprints mean the
same tokenizer at once. Otherwise both tokenizers' canonical vocabularies are built and compared
(``coordinator.vocab.compare_vocabularies``: padding-only differences count as the same vocabulary and
take the exact same-vocabulary path); for different vocabularies TLI's injective drafter -> target
intersection map is built, its coverage reported (never refused for being low), checked end to end
by decoding every mapped pair with both tokenizers when that is quick, validated
(``core.restrict.validate_drafter_to_target``: TLI is lossless only for an injective map; a map that
fails refuses TLI for the pair, with the reason, while SLEM and SLRS still run), and turned into the
drafter token mask that TLI registers once per drafter replica. A tokenizer whose decoder the alignment
cannot read leaves the pair unaligned: the cross-vocabulary algorithms are then refused with the reason.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import structlog
import torch

from coordinator.lookahead.disco import StopClassifierRef
from coordinator.verify.slrs import TokenTrie
from coordinator.vocab import (
    NOT_IN_INTERSECTION,
    CanonicalVocab,
    DecodeCheck,
    IntersectionMap,
    VocabularyMatch,
    build_intersection,
    check_intersection_decodes,
    compare_vocabularies,
)
from core.errors import ErrorReason, InvalidArgumentError, PolyspecError
from core.modelcalls import EngineInfo, FimTokens
from core.restrict import validate_drafter_to_target

log = structlog.get_logger(__name__)

# The end-to-end decode check of the intersection runs at start-up up to this many mapped pairs (it
# decodes every pair with both tokenizers, so it bounds start-up time); larger maps rely on the test
# suite. Timings: docs/benchmarks/notes.md.
DECODE_CHECK_MAX_PAIRS = 50_000

Tokenizer = Any  # a transformers PreTrainedTokenizerBase (transformers ships no type information)


class PairMismatchError(PolyspecError):
    """A service is not what the configuration declares (refuses start-up)."""

    error_reason = ErrorReason.PAIR_MISMATCH


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
    dtype: str = "float32"  # the precision the service computes in (its Info)
    model_fingerprint: str = ""  # Info's weights-derived fingerprint ("" = not reported)

    @property
    def label(self) -> str:
        """How messages name this endpoint: "target at host:port (model)"."""
        return f"{self.role} at {self.address} ({self.model_name})"


class _LazyTrie:
    """The target's byte trie for SLRS, built on first use: for a large vocabulary it takes seconds and
    much memory, which only a coordinator that runs SLRS should pay."""

    def __init__(self, token_bytes: tuple[bytes | None, ...]) -> None:
        self._token_bytes = token_bytes
        self._lock = threading.Lock()
        self._trie: TokenTrie | None = None

    def get(self) -> TokenTrie:
        with self._lock:
            if self._trie is None:
                self._trie = TokenTrie(self._token_bytes)
            return self._trie


@dataclass(frozen=True, eq=False)
class VocabAlignment:
    """Both tokenizers' canonical vocabularies and, for different vocabularies, TLI's intersection.

    ``mask_bitmap`` (bit i % 8 of byte i // 8 = drafter id i in the intersection, sized from the
    drafter's logit width) is registered with SetTokenMask under ``mask_id``, a hash of its contents.
    ``tli_error`` says why TLI is refused for the pair ("" when it can run).
    """

    drafter: CanonicalVocab
    target: CanonicalVocab
    match: VocabularyMatch
    intersection: IntersectionMap | None  # None when the vocabularies are the same
    decode_check: DecodeCheck | None  # None when skipped (same vocabulary, or too many pairs)
    mask_id: str
    mask_bitmap: bytes
    target_rows: int
    _trie: _LazyTrie = field(repr=False)
    tli_error: str = ""

    @property
    def coverage(self) -> float:
        """Fraction of the drafter's tokens in the intersection (1.0 for the same vocabulary)."""
        return 1.0 if self.intersection is None else self.intersection.coverage

    def target_trie(self) -> TokenTrie:
        """The target vocabulary's byte trie (SLRS); blocking on first use."""
        return self._trie.get()


@dataclass(frozen=True)
class ModelPair:
    """The target and, optionally, the drafter of a coordinator, with their vocabulary alignment."""

    target: ModelEndpoint
    drafter: ModelEndpoint | None
    alignment: VocabAlignment | None = None  # built for drafters whose fingerprint differs
    alignment_error: str = ""  # why a drafter with another tokenizer could not be aligned
    # The trained stop classifier (DISCO) loaded for this pair and registered on its drafters; None: none
    stop_classifier: StopClassifierRef | None = None

    @property
    def same_tokenizer(self) -> bool:
        """Same vocabulary: equal fingerprints, or tokenizers that differ in padding only."""
        if self.drafter is None:
            return False
        if same_tokenizer(self.drafter, self.target):
            return True
        return self.alignment is not None and self.alignment.match.same

    @property
    def cross_vocabulary(self) -> bool:
        """Different vocabularies that are aligned (TLI, SLEM and SLRS can run)."""
        return self.drafter is not None and not self.same_tokenizer and self.alignment is not None

    @property
    def tli_error(self) -> str:
        """Why TLI cannot run on this aligned pair ("" when it can; SLEM and SLRS are unaffected)."""
        return "" if self.alignment is None else self.alignment.tli_error

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


def _fim_token_ids(tokenizer: Tokenizer, fim: FimTokens | None) -> FimTokenIds | None:
    if fim is None or not (fim.prefix and fim.suffix and fim.middle):
        return None
    ids = [tokenizer.convert_tokens_to_ids(token) for token in (fim.prefix, fim.suffix, fim.middle)]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise PairMismatchError(
            f"FIM tokens {fim.prefix!r}, {fim.suffix!r}, {fim.middle!r} are not all known"
        )
    return FimTokenIds(prefix=ids[0], suffix=ids[1], middle=ids[2])


def endpoint_from_info(role: str, address: str, info: EngineInfo) -> ModelEndpoint:
    """Builds the endpoint description (and its tokenizer) from a service's Info answer."""
    tokenizer = build_tokenizer(info.tokenizer_files)
    return ModelEndpoint(
        role=role,
        address=address,
        model_name=info.model_name,
        model_type=info.model_type,
        tokenizer=tokenizer,
        fingerprint=info.tokenizer_fingerprint.lower(),
        eos_token_ids=frozenset(info.eos_token_ids),
        vocab_size=info.vocab_size,
        max_context_tokens=info.max_context_tokens,
        max_draft_tokens=info.max_draft_tokens,
        fim=_fim_token_ids(tokenizer, info.fim),
        emulated_forward_seconds=info.emulated_forward_seconds,
        dtype=info.dtype,
        model_fingerprint=info.model_fingerprint,
    )


def check_declared_fingerprint(endpoint: ModelEndpoint, declared: str | None) -> None:
    """Refuses an endpoint whose tokenizer is not the declared one."""
    if declared is not None and declared.lower() != endpoint.fingerprint:
        raise PairMismatchError(
            f"{endpoint.label} uses tokenizer {endpoint.fingerprint}, "
            f"but the configuration declares {declared.lower()}"
        )


def special_ids(endpoint: ModelEndpoint) -> set[int]:
    """The ids that never carry text: the tokenizer's special tokens and the model's EOS ids."""
    ids = {int(i) for i in getattr(endpoint.tokenizer, "all_special_ids", [])}
    return ids | set(endpoint.eos_token_ids)


def canonical_vocab(endpoint: ModelEndpoint) -> CanonicalVocab:
    """The endpoint's canonical vocabulary; ``InvalidArgumentError`` for an unreadable decoder."""
    return CanonicalVocab.from_tokenizer(endpoint.tokenizer, special_ids(endpoint))


def align_pair(target: ModelEndpoint, drafter: ModelEndpoint | None) -> ModelPair:
    """Builds the pair and, for a drafter with another tokenizer, its vocabulary alignment (blocking)."""
    if drafter is None or same_tokenizer(drafter, target):
        return ModelPair(target, drafter)
    try:
        drafter_vocab = canonical_vocab(drafter)
        target_vocab = canonical_vocab(target)
    except InvalidArgumentError as exc:
        reason = f"the tokenizers cannot be aligned ({exc.reason})"
        log.warning("vocab_alignment_unavailable", reason=reason)
        return ModelPair(target, drafter, alignment_error=reason)
    match = compare_vocabularies(drafter_vocab, target_vocab, drafter.vocab_size, target.vocab_size)
    intersection = check = None
    if not match.same:
        intersection = build_intersection(drafter_vocab, target_vocab, drafter.vocab_size, target.vocab_size)
        intersection, check = _checked(drafter_vocab, target_vocab, intersection)
    mask = np.zeros(drafter.vocab_size, dtype=np.bool_)
    if intersection is not None:
        width = min(drafter.vocab_size, intersection.drafter_to_target.shape[0])
        mask[:width] = intersection.drafter_to_target[:width] != NOT_IN_INTERSECTION
    bitmap = np.packbits(mask, bitorder="little").tobytes()
    alignment = VocabAlignment(
        drafter=drafter_vocab,
        target=target_vocab,
        match=match,
        intersection=intersection,
        decode_check=check,
        mask_id="tli-" + hashlib.sha256(bitmap).hexdigest()[:32],
        mask_bitmap=bitmap,
        target_rows=target.vocab_size,
        _trie=_LazyTrie(target_vocab.token_bytes[: target.vocab_size]),
        tli_error=_tli_map_error(intersection),
    )
    return ModelPair(target, drafter, alignment=alignment)


def _tli_map_error(intersection: IntersectionMap | None) -> str:
    """Why TLI cannot use the intersection map ("" when it can): its losslessness needs an injective map."""
    if intersection is None:
        return ""
    try:
        validate_drafter_to_target(torch.from_numpy(intersection.drafter_to_target), intersection.target_rows)
    except ValueError as exc:
        reason = f"the vocabulary intersection map cannot serve tli ({exc})"
        log.error(
            "tli_refused", reason=reason, action="tli is refused for this pair; slem and slrs still run"
        )
        return reason
    return ""


def _checked(
    drafter: CanonicalVocab, target: CanonicalVocab, intersection: IntersectionMap
) -> tuple[IntersectionMap, DecodeCheck | None]:
    """Runs the end-to-end decode check when quick; pairs that decode differently leave the map."""
    if intersection.mapped_count > DECODE_CHECK_MAX_PAIRS:
        return intersection, None
    check = check_intersection_decodes(drafter, target, intersection)
    if check.ok:
        return intersection, check
    repaired = intersection.drafter_to_target.copy()
    for mismatch in check.mismatches:
        repaired[mismatch.drafter_id] = NOT_IN_INTERSECTION
    log.error(
        "vocab_intersection_decode_mismatch",
        mismatches=len(check.mismatches),
        first=repr(check.mismatches[0]),
        action="the mismatched pairs are left out of the intersection",
    )
    return IntersectionMap(repaired, intersection.drafter_vocab_size, intersection.target_rows), check
