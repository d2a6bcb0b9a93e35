"""polyspec.v1.CoordinatorService: protos in and out through ``coordinator.wire``, the loop between."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import Any

import grpc
from polyspec.v1 import coordinator_pb2, coordinator_pb2_grpc

from coordinator.admission import AdmissionRefusedError
from coordinator.clients import Deadline
from coordinator.loop import FinishEvent, LoopServices, TokensEvent, generate
from coordinator.prompting import IncrementalDetokenizer, decode_output, text_token_ids
from coordinator.request import GenerationParams
from coordinator.wire import FINISH_REASONS, params_from_proto, stats_message
from core.errors import PolyspecError
from core.serving.interceptor import mark_accepted

_Context = grpc.aio.ServicerContext[Any, Any]


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """Generate and GenerateStream over one coordinator's services."""

    def __init__(self, services: LoopServices) -> None:
        self._services = services

    def _params(self, request: coordinator_pb2.GenerateRequest) -> GenerationParams:
        return params_from_proto(request, self._services.settings)

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: coordinator_pb2.GenerateRequest, context: _Context
    ) -> coordinator_pb2.GenerateResponse:
        token_ids: list[int] = []
        finish: FinishEvent | None = None
        async with self._serving(context):
            params = self._params(request)
            events = generate(self._services, params, Deadline(context.time_remaining()))
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, TokensEvent):
                        token_ids.extend(event.token_ids)
                    else:
                        finish = event
        assert finish is not None, "the generation loop ended without a finish event"
        target = self._services.pair.target
        text_ids = text_token_ids(token_ids, target.eos_token_ids, params.ignore_eos)
        return coordinator_pb2.GenerateResponse(
            text=decode_output(target.tokenizer, text_ids),
            token_ids=token_ids,
            finish_reason=FINISH_REASONS[finish.reason],
            stats=stats_message(finish.stats),
            request_id=params.request_id,
        )

    async def GenerateStream(  # noqa: N802 (gRPC method name)
        self, request: coordinator_pb2.GenerateStreamRequest, context: _Context
    ) -> AsyncIterator[coordinator_pb2.GenerateStreamResponse]:
        target = self._services.pair.target
        detokenizer = IncrementalDetokenizer(target.tokenizer)
        async with self._serving(context):
            params = self._params(request.request)
            events = generate(self._services, params, Deadline(context.time_remaining()))
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, TokensEvent):
                        text_ids = text_token_ids(event.token_ids, target.eos_token_ids, params.ignore_eos)
                        yield coordinator_pb2.GenerateStreamResponse(
                            text_delta=detokenizer.add(text_ids),
                            token_ids=event.token_ids,
                            request_id=params.request_id,
                        )
                    else:
                        yield coordinator_pb2.GenerateStreamResponse(
                            text_delta=detokenizer.finish(),
                            finish_reason=FINISH_REASONS[event.reason],
                            stats=stats_message(event.stats),
                            request_id=params.request_id,
                        )

    @asynccontextmanager
    async def _serving(self, context: _Context) -> AsyncIterator[None]:
        """Counts a failed request; holds an admission slot for it, taken before any work.

        Once admitted, the acceptance marker goes out (``polyspec-accepted``): a refusal does not carry
        it, so a client may re-send a refused request (it never ran), never an admitted one.
        """
        with self._counting_failures():
            gate = self._services.admission
            try:
                await gate.acquire(context.time_remaining())
            except AdmissionRefusedError:
                self._services.metrics.admission_refusals.inc()
                raise
            try:
                await mark_accepted(context)
                yield
            finally:
                gate.release()

    @contextmanager
    def _counting_failures(self) -> Iterator[None]:
        """Counts requests that end with an error, by status code."""
        try:
            yield
        except PolyspecError as exc:
            self._services.metrics.request_failures.labels(code=exc.kind.value).inc()
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self._services.metrics.request_failures.labels(code="CANCELLED").inc()
            raise
        except Exception:
            self._services.metrics.request_failures.labels(code="INTERNAL").inc()
            raise
