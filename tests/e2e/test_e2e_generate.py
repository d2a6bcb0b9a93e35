"""`polyspec generate` and the SDK against a real local stack (model services and coordinator processes)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from polyspec import AsyncClient, Client, GenerationStats, InvalidArgumentError

from tests.e2e.conftest import run_polyspec

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

PROMPT = "def fibonacci(n):"


def test_generate_json(smollm2_stack: str) -> None:
    result = run_polyspec(
        ["--log-level", "WARNING", "generate", "--coordinator", smollm2_stack, "--json", "--temperature", "0",
         "--max-new-tokens", "8", "--lookahead", "static:3", PROMPT]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"text", "token_ids", "finish_reason", "stats", "request_id"}
    assert set(out["stats"]) == {f.name for f in dataclasses.fields(GenerationStats)}
    assert out["stats"]["algorithm"] == "sd" and out["stats"]["lookahead"].startswith("static:3")
    assert out["stats"]["output_tokens"] == len(out["token_ids"]) > 0
    assert out["finish_reason"] in ("length", "stop") and out["text"]

    with Client(smollm2_stack, timeout=600) as client:
        same = client.generate(PROMPT, max_new_tokens=8, temperature=0.0, algorithm="ar")
    # Greedy speculative decoding returns the target's own tokens.
    assert list(same.token_ids) == out["token_ids"] and same.text == out["text"]


def test_generate_stream_prints_the_same_text(smollm2_stack: str) -> None:
    args = ["--log-level", "WARNING", "generate", "--coordinator", smollm2_stack, "--temperature", "0",
            "--max-new-tokens", "8", "--lookahead", "3", PROMPT]  # fmt: skip
    streamed = run_polyspec([*args, "--stream"])
    plain = run_polyspec(args)
    assert streamed.returncode == 0 and plain.returncode == 0, streamed.stderr + plain.stderr
    assert streamed.stdout == plain.stdout and plain.stdout.strip()
    assert "algorithm=sd" in streamed.stderr


def test_generate_server_error(smollm2_stack: str) -> None:
    result = run_polyspec(["generate", "--coordinator", smollm2_stack, "--max-new-tokens", "0", PROMPT])
    assert result.returncode == 1
    assert result.stderr.startswith("error: INVALID_ARGUMENT: max_new_tokens")


async def test_async_client_stream_matches_generate(smollm2_stack: str) -> None:
    async with AsyncClient(smollm2_stack, timeout=600) as client:
        whole = await client.generate(PROMPT, max_new_tokens=6, temperature=0.7, seed=11, lookahead=3)
        stream = client.generate_stream(PROMPT, max_new_tokens=6, temperature=0.7, seed=11, lookahead=3)
        deltas = [delta async for delta in stream]
        with pytest.raises(InvalidArgumentError, match="max_new_tokens"):
            await client.generate(PROMPT, max_new_tokens=0)
    assert "".join(deltas) == stream.result.text == whole.text
    assert stream.result.token_ids == whole.token_ids and stream.result.stats.seed == 11
