"""Wire-level helpers shared by every polyspec process (no torch, no grpc)."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

from core.errors import ContextMissError, InvalidArgumentError


def prefix_checksum(tokens: Sequence[int]) -> int:
    """Checksum of a token prefix, as carried in ``TokenContext.cached_prefix_checksum``.

    The 64-bit blake2b digest of the tokens as little-endian int32, read as an unsigned
    little-endian integer. Both ends compute it, so it must never change within ``polyspec.v1``.
    """
    data = array("i", tokens)
    if data.itemsize != 4:  # pragma: no cover - every supported platform has 4-byte C ints
        raise RuntimeError("int32 array expected")
    if array("i", [1]).tobytes()[0] != 1:  # pragma: no cover - big-endian hosts
        data.byteswap()
    return int.from_bytes(hashlib.blake2b(data.tobytes(), digest_size=8).digest(), "little")


def whole_context(
    sequence_id: str,
    cached_prefix_len: int,
    cached_prefix_checksum: int,
    tokens: Sequence[int],
    held: Sequence[int] | None,
) -> list[int]:
    """The whole context a request names: a checked prefix of the ``held`` tokens plus its ``tokens``.

    ``held`` is what the server keeps for the sequence (None: nothing). A prefix that is not held, or
    whose checksum differs, raises ``ContextMissError`` (the caller resends the whole context); an empty
    context raises ``InvalidArgumentError``.
    """
    prefix: list[int] = []
    if cached_prefix_len > 0:
        if (
            held is None
            or cached_prefix_len > len(held)
            or prefix_checksum(held[:cached_prefix_len]) != cached_prefix_checksum
        ):
            raise ContextMissError(
                f"sequence {sequence_id!r}: the cached prefix of {cached_prefix_len} tokens is not held "
                "(evicted, another replica or a checksum mismatch); resend the whole context "
                "with cached_prefix_len = 0"
            )
        prefix = list(held[:cached_prefix_len])
    whole = prefix + list(tokens)
    if not whole:
        raise InvalidArgumentError("context.tokens", "the context is empty; send at least one token")
    return whole
