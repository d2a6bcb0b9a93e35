"""Errors of the model store (domain errors, mapped to statuses by the one interceptor)."""

from __future__ import annotations

from collections.abc import Iterable

from core.errors import ErrorReason, InvalidArgumentError, PolyspecError


class ModelStoreError(PolyspecError):
    """A model or vocabulary could not be fetched, verified or converted."""

    error_reason = ErrorReason.MODEL_STORE


class ChecksumMismatchError(ModelStoreError):
    """A downloaded or joined file does not have the sha256 the registry pins."""

    error_reason = ErrorReason.CHECKSUM_MISMATCH

    def __init__(self, name: str, expected: str, actual: str) -> None:
        super().__init__(f"{name}: sha256 mismatch: expected {expected}, got {actual}")
        self.name = name
        self.expected = expected
        self.actual = actual


class UnknownModelError(InvalidArgumentError):
    """A model (or vocabulary) name that the registry does not know."""

    error_reason = ErrorReason.UNKNOWN_MODEL

    def __init__(self, field: str, name: str, known: Iterable[str]) -> None:
        super().__init__(field, f"unknown name {name!r}; known: {', '.join(known)}")
        self.name = name
