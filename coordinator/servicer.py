"""polyspec.v1.CoordinatorService: validate -> run the generation loop -> convert to protos (thin)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import Any

import grpc
from polyspec.v1 import coordinator_pb2, coordinator_pb2_grpc

from coordinator.clients import Deadline
from coordinator.loop import FinishEvent, FinishReason, LoopServices, RequestStats, TokensEvent, generate
from coordinator.prompting import IncrementalDetokenizer, decode_output, text_token_ids
from coordinator.validation import GenerationParams, params_from_proto
from core.errors import PolyspecError

_Context = grpc.aio.ServicerContext[Any, Any]

_FINISH_REASONS = {
    FinishReason.LENGTH: coordinator_pb2.FINISH_REASON_LENGTH,
    FinishReason.STOP: coordinator_pb2.FINISH_REASON_STOP,
    FinishReason.CONTEXT: coordinator_pb2.FINISH_REASON_CONTEXT,
}


def stats_message(stats: RequestStats) -> coordinator_pb2.GenerationStats:
    """The wire form of a request's statistics."""
    return coordinator_pb2.GenerationStats(
        algorithm=stats.algorithm.to_proto(),
        lookahead=stats.lookahead,
        prompt_tokens=stats.prompt_tokens,
        output_tokens=stats.output_tokens,
        draft_tokens=stats.draft_tokens,
        accepted_tokens=stats.accepted_tokens,
        acceptance_rate=stats.acceptance_rate,
        target_forwards=stats.target_forwards,
        drafter_forwards=stats.drafter_forwards,
        rounds=stats.rounds,
        time_to_first_token_seconds=stats.time_to_first_token_seconds,
        total_seconds=stats.total_seconds,
        tokens_per_second=stats.tokens_per_second,
        bytes_sent=stats.bytes_sent,
        bytes_received=stats.bytes_received,
        emulated_latency=stats.emulated_latency,
        fallback_reason=stats.fallback_reason,
        seed=stats.seed,
    )


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
        with self._counting_failures():
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
            finish_reason=_FINISH_REASONS[finish.reason],
            stats=stats_message(finish.stats),
            request_id=params.request_id,
        )

    async def GenerateStream(  # noqa: N802 (gRPC method name)
        self, request: coordinator_pb2.GenerateStreamRequest, context: _Context
    ) -> AsyncIterator[coordinator_pb2.GenerateStreamResponse]:
        target = self._services.pair.target
        detokenizer = IncrementalDetokenizer(target.tokenizer)
        with self._counting_failures():
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
                            finish_reason=_FINISH_REASONS[event.reason],
                            stats=stats_message(event.stats),
                            request_id=params.request_id,
                        )

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
