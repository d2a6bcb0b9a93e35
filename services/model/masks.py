"""Token masks: sets of allowed drafter token ids, registered once with SetTokenMask and named by Draft.

TLI (token-level intersection; Timor et al., ICML 2025, arXiv 2502.05202, Algorithm 4) restricts the drafter
to the tokens whose strings the target's vocabulary also holds. The coordinator sends that set once per
drafter/target pair as a bitmap and each Draft names it by id, so no round ships O(vocab) bytes.

Bitmap layout: bit ``i % 8`` (least significant first) of byte ``i // 8`` set = token id ``i`` allowed; ids
beyond the bitmap are not allowed. A mask with no allowed id is valid: drafting with it proposes nothing.

Drafting with a mask sets the logits outside it to -inf *before* the warpers (temperature, top-k, top-p)
and the support truncation, so each draft token is sampled from the drafter's distribution renormalised on
the mask, and the shipped ``draft_probs`` are exactly that distribution (``core.drafting``:
``core.restrict``'s ``restrict_logits`` followed by ``core.sampling.draft_tokens_batch``).

``TokenMaskStore`` keeps the most recently used masks up to a fixed count. It is guarded by a lock, since
SetTokenMask registers masks on the event loop while Draft reads them on the model worker thread; stored
tensors are never changed in place (a replacement stores a new one), so a Draft keeps one mask per call.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import structlog
import torch
from torch import Tensor

from core.errors import UnknownTokenMaskError

log = structlog.get_logger(__name__)


def bitmap_bytes(vocab_size: int) -> int:
    """The longest bitmap a model of ``vocab_size`` logit columns accepts: ceil(vocab_size / 8) bytes."""
    return (vocab_size + 7) // 8


def mask_from_bitmap(bitmap: bytes, vocab_size: int, device: torch.device) -> Tensor:  # [vocab_size] bool
    """Unpacks a bitmap (little-endian bit order) into a bool row; ids beyond the bitmap are not allowed.

    Raises ``ValueError`` when the bitmap is longer than ``bitmap_bytes(vocab_size)`` (requests are checked
    before, see ``services.model.validation``); set bits past ``vocab_size`` in its last byte are ignored.
    """
    if len(bitmap) > bitmap_bytes(vocab_size):
        raise ValueError(f"bitmap of {len(bitmap)} bytes is longer than {bitmap_bytes(vocab_size)}")
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    allowed = np.zeros(vocab_size, dtype=np.bool_)
    width = min(vocab_size, bits.shape[0])
    allowed[:width] = bits[:width].astype(np.bool_)
    return torch.from_numpy(allowed).to(device)


class MaskRegistration(enum.Enum):
    """What a SetTokenMask call did to the store."""

    ADDED = "added"
    UNCHANGED = "unchanged"  # same id, same contents: a no-op (besides counting as a use)
    REPLACED = "replaced"  # same id, other contents


@dataclass(frozen=True)
class RegisteredMask:
    """The outcome of one registration."""

    allowed_tokens: int
    registration: MaskRegistration
    evicted_ids: tuple[str, ...]


class TokenMaskStore:
    """Masks by id for one model, the least recently registered or used dropped beyond ``capacity``."""

    def __init__(self, capacity: int, vocab_size: int, device: torch.device) -> None:
        if capacity < 1 or vocab_size < 1:
            raise ValueError("capacity and vocab_size must be positive")
        self._capacity = capacity
        self._vocab_size = vocab_size
        self._device = device
        self._lock = threading.Lock()
        self._masks: OrderedDict[str, Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._masks)

    @property
    def capacity(self) -> int:
        return self._capacity

    def register(self, mask_id: str, bitmap: bytes) -> RegisteredMask:
        """Stores (or replaces) the mask of ``bitmap`` under ``mask_id``; same contents keep the old one."""
        mask = mask_from_bitmap(bitmap, self._vocab_size, self._device)
        allowed_tokens = int(mask.sum().item())
        evicted: list[str] = []
        with self._lock:
            held = self._masks.get(mask_id)
            if held is not None and torch.equal(held, mask):
                registration = MaskRegistration.UNCHANGED
            else:
                registration = MaskRegistration.ADDED if held is None else MaskRegistration.REPLACED
                self._masks[mask_id] = mask
            self._masks.move_to_end(mask_id)
            while len(self._masks) > self._capacity:
                evicted.append(self._masks.popitem(last=False)[0])
        log.info(
            "token_mask_registered",
            mask_id=mask_id,
            allowed_tokens=allowed_tokens,
            registration=registration.value,
            evicted=evicted,
        )
        return RegisteredMask(allowed_tokens, registration, tuple(evicted))

    def get(self, mask_id: str) -> Tensor:  # [vocab_size] bool
        """The mask registered under ``mask_id``; raises ``UnknownTokenMaskError`` when it is not held."""
        with self._lock:
            mask = self._masks.get(mask_id)
            if mask is None:
                raise UnknownTokenMaskError(
                    f"token_mask_id {mask_id!r} is not registered on this server (never sent, evicted or "
                    "another replica); register it with SetTokenMask and retry"
                )
            self._masks.move_to_end(mask_id)
            return mask
