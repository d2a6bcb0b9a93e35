"""polyspec.v1.ModelService: validate -> convert -> engine call on the model worker -> convert back.

Only Draft and Score (the forwards) go through the worker's bounded first-in-first-out queue. The
housekeeping calls run on the event loop and are never refused by a full queue nor wait behind
forwards: Info (a prepared answer), SetTokenMask (unpacking a bitmap of ceil(vocab / 8) bytes into a
thread-safe store; a Draft sent after SetTokenMask returned always sees the mask; SetStopClassifier
likewise parses a small artifact into one) and Release
(dropping cache entries under the cache manager's lock; a forward still running on a released
sequence finishes on its own copy and keeps nothing). Under overload a Release therefore frees its
caches at once instead of leaving them to the idle expiry. Health is the server's own service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import grpc
from polyspec.v1 import model_pb2, model_pb2_grpc

from core.cancel import CallCancelledError, CancelSignal
from core.errors import ContextMissError, UnknownStopClassifierError, UnknownTokenMaskError
from core.modelcalls import DraftCall, DraftOutcome, EngineInfo, ScoreCall, ScoreOutcome
from services.model import wire
from services.model.classifiers import RegisteredClassifier
from services.model.masks import RegisteredMask
from services.model.metrics import ModelMetrics
from services.model.validation import (
    RequestLimits,
    check_draft_request,
    check_release_request,
    check_score_request,
    check_set_stop_classifier_request,
    check_set_token_mask_request,
)
from services.model.worker import ModelWorker

_Outcome = TypeVar("_Outcome", DraftOutcome, ScoreOutcome)
_Context = grpc.aio.ServicerContext[Any, Any]


class ServedEngine(Protocol):
    """What the servicer serves: the model engine, or a model-free drafter's (``services.lookup``).

    ``draft`` and ``score`` run on the worker thread; ``release`` and ``set_token_mask`` are thread-safe.
    """

    info: EngineInfo
    forwards_served: int  # running totals for Info (written by the worker thread)
    emulated_overruns: int

    def draft(self, call: DraftCall, cancel: CancelSignal | None = None) -> DraftOutcome: ...

    def score(self, call: ScoreCall, cancel: CancelSignal | None = None) -> ScoreOutcome: ...

    def release(self, sequence_ids: Iterable[str]) -> int: ...

    def set_token_mask(self, mask_id: str, bitmap: bytes) -> RegisteredMask: ...

    def set_stop_classifier(
        self, classifier_id: str, spec_json: str, weights: bytes
    ) -> RegisteredClassifier: ...


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    """The ModelService over one engine; its work runs on the worker thread, first in first out."""

    def __init__(self, engine: ServedEngine, worker: ModelWorker, metrics: ModelMetrics) -> None:
        self._engine = engine
        self._worker = worker
        self._metrics = metrics
        info = engine.info
        self._limits = RequestLimits(info.vocab_size, info.max_context_tokens, info.max_draft_tokens)
        self._info = wire.info_response(info)

    async def Info(  # noqa: N802 (gRPC method name)
        self, request: model_pb2.InfoRequest, context: _Context
    ) -> model_pb2.InfoResponse:
        with self._metrics.timed("Info"):
            response = model_pb2.InfoResponse()
            response.CopyFrom(self._info)
            response.forwards_served = self._engine.forwards_served
            response.emulated_overruns = self._engine.emulated_overruns
            return response

    async def Draft(  # noqa: N802 (gRPC method name)
        self, request: model_pb2.DraftRequest, context: _Context
    ) -> model_pb2.DraftResponse:
        with self._metrics.timed("Draft"):
            check_draft_request(request, self._limits)
            call = wire.draft_call(request)
            outcome = await self._run(lambda cancel: self._engine.draft(call, cancel))
            self._metrics.record_draft(len(outcome.draft_tokens))
            return wire.draft_response(outcome)

    async def Score(  # noqa: N802 (gRPC method name)
        self, request: model_pb2.ScoreRequest, context: _Context
    ) -> model_pb2.ScoreResponse:
        with self._metrics.timed("Score"):
            check_score_request(request, self._limits)
            call = wire.score_call(request)
            outcome = await self._run(lambda cancel: self._engine.score(call, cancel))
            return wire.score_response(outcome)

    async def Release(  # noqa: N802 (gRPC method name)
        self, request: model_pb2.ReleaseRequest, context: _Context
    ) -> model_pb2.ReleaseResponse:
        with self._metrics.timed("Release"):
            check_release_request(request)
            released = self._engine.release(list(request.sequence_ids))
            return model_pb2.ReleaseResponse(released=released)

    async def SetTokenMask(  # noqa: N802 (gRPC method name)
        self, request: model_pb2.SetTokenMaskRequest, context: _Context
    ) -> model_pb2.SetTokenMaskResponse:
        with self._metrics.timed("SetTokenMask"):
            check_set_token_mask_request(request, self._limits)
            registered = self._engine.set_token_mask(request.mask_id, request.allowed_bitmap)
            return model_pb2.SetTokenMaskResponse(allowed_tokens=registered.allowed_tokens)

    async def SetStopClassifier(  # noqa: N802 (gRPC method name)
        self, request: model_pb2.SetStopClassifierRequest, context: _Context
    ) -> model_pb2.SetStopClassifierResponse:
        with self._metrics.timed("SetStopClassifier"):
            check_set_stop_classifier_request(request)
            registered = self._engine.set_stop_classifier(
                request.classifier_id, request.spec_json, request.weights
            )
            return model_pb2.SetStopClassifierResponse(parameters=registered.parameters)

    async def _run(self, fn: Callable[[CancelSignal], _Outcome]) -> _Outcome:
        """Runs a Draft/Score on the worker; a caller that goes away sets its cancel signal."""
        cancel = CancelSignal()

        def counted() -> _Outcome:  # on the worker thread: a cancelled call's forwards count too
            try:
                outcome = fn(cancel)
            except CallCancelledError as exc:
                self._metrics.record_cancelled(exc.stats)
                raise
            self._metrics.record_stats(outcome.stats)
            return outcome

        try:
            return await self._worker.run(counted, cancel)
        except ContextMissError:
            self._metrics.context_misses.inc()
            raise
        except UnknownTokenMaskError:
            self._metrics.token_mask_misses.inc()
            raise
        except UnknownStopClassifierError:
            self._metrics.token_mask_misses.inc()  # the same kind of miss: a registration to resend
            raise
