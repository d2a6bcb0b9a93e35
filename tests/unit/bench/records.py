"""Records and runs with chosen token counts and times (bench unit tests)."""

from __future__ import annotations

from tools.bench.records import BenchPrompt, Configuration, ConfigurationRun, PromptRecord


def prompt(index: int) -> BenchPrompt:
    return BenchPrompt(index, f"HumanEval/{index}", f"def task_{index}():\n")


def record(index: int, tokens: int, seconds: float) -> PromptRecord:
    """A record of prompt ``index``: ``tokens`` output tokens in ``seconds``."""
    return PromptRecord(
        prompt_index=index,
        task_id=f"HumanEval/{index}",
        output_tokens=tokens,
        seconds=seconds,
        tokens_per_second=tokens / seconds,
        finish_reason="length",
        token_ids=tuple(range(tokens)),
    )


def run(configuration: Configuration, *timings: tuple[int, int, float]) -> ConfigurationRun:
    """A run with one record per ``(prompt index, output tokens, seconds)``."""
    return ConfigurationRun(
        configuration, [record(index, tokens, seconds) for index, tokens, seconds in timings]
    )
