"""Wire-level helpers shared by every polyspec process (no torch, no grpc)."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence


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
