"""The speculation loop (SI): one request's rounds of draft -> verify -> commit, as an async event stream."""

from coordinator.loop.events import FinishEvent, FinishReason, GenerationEvent, RequestStats, TokensEvent
from coordinator.loop.runner import generate
from coordinator.loop.state import LoopServices

__all__ = [
    "FinishEvent",
    "FinishReason",
    "GenerationEvent",
    "LoopServices",
    "RequestStats",
    "TokensEvent",
    "generate",
]
