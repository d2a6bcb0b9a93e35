"""``polyspec bench load``: N concurrent clients for a fixed time, at capacity, overloaded and under faults.

The stack runs as ``polyspec serve`` child processes on 127.0.0.1 (``tools.demo.LocalStack``): one
drafter, two target replicas (``target-a``, ``target-b``) and a coordinator over them with the admission
caps asked for. The runs, in this order (the kill comes last: it leaves one target replica):

- ``capacity``: as many clients as the coordinator runs at once (``--max-concurrent-requests``);
- ``overload``: ``overload_factor`` times as many;
- ``target-stop``: capacity clients; ``target-b`` is SIGSTOPped a third into the run, SIGCONTed at two
  thirds (a hung replica);
- ``drafter-stop``: the same with the drafter;
- ``target-kill``: capacity clients; ``target-b`` is SIGKILLed a third into the run.

Each client loops: a sampled request (its own seed), and after a refusal (RESOURCE_EXHAUSTED) it waits
the coordinator's retry hint before the next. The SDK's own retries are off, so every refusal and
failure is seen. Requests still running at the end of the window are cancelled and counted as
unfinished. Beside them a greedy canary sends one prompt again and again and compares each output with
the one it gave before the first run. A sampler reads each service's resident set size every
``RSS_INTERVAL_SECONDS`` (psutil when installed, else /proc) for the peak of each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tools.bench.load_report import CanaryTally, Outcome, RunRecord, build_document, format_table
from tools.demo import ChildService, LocalStack, wait_until_serving

RunName = Literal["capacity", "overload", "target-stop", "drafter-stop", "target-kill"]
RUN_NAMES: tuple[RunName, ...] = ("capacity", "overload", "target-stop", "drafter-stop", "target-kill")
DEFAULT_PROMPTS = ("def fibonacci(n):", "import numpy as np\n", "class Stack:\n    def push(self, item):")
RSS_INTERVAL_SECONDS = 0.2
CALL_TIMEOUT_SECONDS = 120.0
SETTLE_SECONDS = 1.0  # between runs
FAULTY_TARGET = "target-b"
# (child to signal, signal at a third of the run, signal at two thirds or None)
FAULTS: dict[str, tuple[str, signal.Signals, signal.Signals | None]] = {
    "target-stop": (FAULTY_TARGET, signal.SIGSTOP, signal.SIGCONT),
    "drafter-stop": ("drafter", signal.SIGSTOP, signal.SIGCONT),
    "target-kill": (FAULTY_TARGET, signal.SIGKILL, None),
}


class LoadOptions(BaseModel):
    """What one ``polyspec bench load`` measures (validated, frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drafter: str = Field(min_length=1, description="Drafter: a model-store name or a model folder.")
    target: str = Field(min_length=1, description="Target (both replicas): a model-store name or a folder.")
    duration_seconds: float = Field(20.0, gt=0, description="Length of each run.")
    max_concurrent_requests: int = Field(4, ge=1, description="The coordinator's admission cap.")
    max_queued_requests: int = Field(4, ge=0, description="The coordinator's wait queue.")
    overload_factor: int = Field(5, ge=1, description="Clients of the overload run, in admission caps.")
    runs: tuple[RunName, ...] = Field(RUN_NAMES, min_length=1)
    prompts: tuple[str, ...] = Field(DEFAULT_PROMPTS, min_length=1)
    max_new_tokens: int = Field(32, ge=1, le=4096)
    temperature: float = Field(0.7, ge=0.0, description="Of the load requests (the canary is greedy).")
    seed: int = Field(0, ge=0)
    threads: int = Field(1, ge=1, description="torch threads of each model service.")
    out: Path | None = Field(None, description="JSON path; default bench-results/load.json.")
    startup_timeout_seconds: float = Field(600.0, gt=0)
    log_dir: Path | None = None
    log_level: str = "WARNING"

    def clients(self, run: RunName) -> int:
        factor = self.overload_factor if run == "overload" else 1
        return self.max_concurrent_requests * factor


@dataclass
class Stack:
    """The started services: children by name and the coordinator's address."""

    children: dict[str, ChildService]
    address: str


def start_stack(stack: LocalStack, options: LoadOptions, drafter_dir: Path, target_dir: Path) -> Stack:
    """Starts drafter, two target replicas, then the coordinator over them; waits until all serve."""
    model_flags = ["--threads", str(options.threads)]
    children = {
        "drafter": stack.start("drafter", ["model", "--model", str(drafter_dir), *model_flags]),
        "target-a": stack.start("target-a", ["model", "--model", str(target_dir), *model_flags]),
        "target-b": stack.start("target-b", ["model", "--model", str(target_dir), *model_flags]),
    }
    addresses = {
        name: wait_until_serving(child, options.startup_timeout_seconds) for name, child in children.items()
    }
    coordinator_flags = [
        "coordinator",
        "--drafter",
        addresses["drafter"],
        "--target",
        f"{addresses['target-a']},{addresses['target-b']}",
        "--max-concurrent-requests",
        str(options.max_concurrent_requests),
        "--max-queued-requests",
        str(options.max_queued_requests),
    ]
    children["coordinator"] = stack.start("coordinator", coordinator_flags)
    address = wait_until_serving(children["coordinator"], options.startup_timeout_seconds)
    return Stack(children, address)


def _rss_reader() -> Callable[[int], int | None]:
    """Resident set size of a pid in bytes (None once it is gone): psutil when installed, else /proc."""
    try:
        import psutil  # type: ignore[import-untyped]  # optional, no stubs
    except ImportError:
        return _proc_rss

    def rss(pid: int) -> int | None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None

    return rss


def _proc_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class RssSampler:
    """Samples the services' resident set sizes in a thread; ``peaks`` since the last ``reset``."""

    pids: dict[str, int]
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        self.peaks = {name: 0 for name in self.pids}

    def sample(self, rss: Callable[[int], int | None]) -> None:
        for name, pid in self.pids.items():
            size = rss(pid)
            if size is not None and size > self.peaks.get(name, 0):
                self.peaks[name] = size

    @contextlib.contextmanager
    def running(self) -> Iterator[RssSampler]:
        rss = _rss_reader()
        self.reset()

        def loop() -> None:
            while not self._stop.wait(RSS_INTERVAL_SECONDS):
                self.sample(rss)

        thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


async def _one_request(client: Any, options: LoadOptions, prompt: str, seed: int, timeout: float) -> Outcome:
    from polyspec import PolyspecError, ResourceExhaustedError

    started = time.monotonic()
    try:
        result = await client.generate(
            prompt,
            max_new_tokens=options.max_new_tokens,
            temperature=options.temperature,
            seed=seed,
            timeout=timeout,
        )
    except ResourceExhaustedError as exc:
        return Outcome("refused", time.monotonic() - started, code=exc.code_name)
    except PolyspecError as exc:
        return Outcome("failed", time.monotonic() - started, code=exc.code_name)
    return Outcome("ok", time.monotonic() - started, tokens=len(result.token_ids))


async def _load_client(
    address: str, options: LoadOptions, index: int, end: float, outcomes: list[Outcome]
) -> None:
    """One client: requests back to back until ``end``; a refusal waits the coordinator's hint."""
    from polyspec import AsyncClient

    async with AsyncClient(address, max_retries=0) as client:
        number = 0
        while time.monotonic() < end:
            prompt = options.prompts[(index + number) % len(options.prompts)]
            seed = options.seed + index * 1_000_003 + number
            outcome = await _one_request(client, options, prompt, seed, CALL_TIMEOUT_SECONDS)
            number += 1
            if time.monotonic() <= end:  # ended inside the window: counted
                outcomes.append(outcome)
            if outcome.kind == "refused":
                await asyncio.sleep(max(0.0, min(1.0, end - time.monotonic())))


async def greedy_reference(address: str, options: LoadOptions) -> tuple[int, ...]:
    """The canary prompt's greedy output before any run (retried while the stack warms up)."""
    from polyspec import AsyncClient

    async with AsyncClient(address, timeout=CALL_TIMEOUT_SECONDS) as client:
        result = await client.generate(
            options.prompts[0], max_new_tokens=options.max_new_tokens, temperature=0.0
        )
    return tuple(result.token_ids)


async def _canary(address: str, options: LoadOptions, reference: tuple[int, ...], end: float) -> CanaryTally:
    """Greedy requests of the canary prompt back to back until ``end``, each compared with ``reference``."""
    from polyspec import AsyncClient, PolyspecError

    tally = CanaryTally()
    async with AsyncClient(address, timeout=CALL_TIMEOUT_SECONDS) as client:
        while time.monotonic() < end:
            try:
                result = await client.generate(
                    options.prompts[0], max_new_tokens=options.max_new_tokens, temperature=0.0
                )
            except PolyspecError as exc:
                tally.errors[exc.code_name] += 1
                await asyncio.sleep(max(0.0, min(1.0, end - time.monotonic())))
                continue
            if tuple(result.token_ids) == reference:
                tally.identical += 1
            else:
                tally.different += 1
    return tally


async def _inject_fault(children: dict[str, ChildService], run: str, duration: float, log: list[str]) -> None:
    """Signals the run's faulty child at a third of the run (and again at two thirds, when asked)."""
    if run not in FAULTS:
        return
    name, first, second = FAULTS[run]
    pid = children[name].process.pid
    await asyncio.sleep(duration / 3)
    os.kill(pid, first)
    log.append(f"{first.name} {name} at {duration / 3:.1f} s")
    if second is None:
        return
    try:
        await asyncio.sleep(duration / 3)
    finally:
        os.kill(pid, second)  # also when the run ends early: never leave a stopped service behind
        log.append(f"{second.name} {name} at {2 * duration / 3:.1f} s")


async def _run_window(
    stack: Stack, options: LoadOptions, run: RunName, reference: tuple[int, ...]
) -> tuple[list[Outcome], int, CanaryTally, list[str], float]:
    """The run's clients, canary and fault over one window; cancels what is still running at its end."""
    duration = options.duration_seconds
    started = time.monotonic()
    end = started + duration
    outcomes: list[Outcome] = []
    fault_log: list[str] = []
    clients = [
        asyncio.create_task(_load_client(stack.address, options, index, end, outcomes))
        for index in range(options.clients(run))
    ]
    canary = asyncio.create_task(_canary(stack.address, options, reference, end))
    fault = asyncio.create_task(_inject_fault(stack.children, run, duration, fault_log))
    await asyncio.sleep(duration)
    unfinished = sum(not task.done() for task in clients)
    for task in (*clients, fault):
        task.cancel()
    await asyncio.gather(*clients, fault, return_exceptions=True)
    tally = await asyncio.wait_for(canary, CALL_TIMEOUT_SECONDS)
    return outcomes, unfinished, tally, fault_log, time.monotonic() - started


async def run_load(stack: Stack, options: LoadOptions, sampler: RssSampler, out: IO[str]) -> list[RunRecord]:
    """Every run of ``options.runs`` in turn (the kill last)."""
    reference = await greedy_reference(stack.address, options)
    ordered = [name for name in RUN_NAMES if name in options.runs]
    records = []
    for run in ordered:
        print(
            f"run {run}: {options.clients(run)} clients for {options.duration_seconds:g} s",
            file=out,
            flush=True,
        )
        sampler.reset()
        outcomes, unfinished, tally, fault_log, _ = await _run_window(stack, options, run, reference)
        records.append(
            RunRecord(
                name=run,
                clients=options.clients(run),
                seconds=options.duration_seconds,
                fault="; ".join(fault_log) or "none",
                outcomes=outcomes,
                unfinished=unfinished,
                canary=tally,
                peak_rss_bytes=dict(sampler.peaks),
            )
        )
        await asyncio.sleep(SETTLE_SECONDS)
    return records


def _settings(options: LoadOptions) -> dict[str, Any]:
    settings = options.model_dump(mode="json", exclude={"out", "log_dir", "log_level"})
    settings["clients"] = {run: options.clients(run) for run in options.runs}
    settings["faulty_target"] = FAULTY_TARGET
    return settings


def _machine(options: LoadOptions) -> dict[str, Any]:
    import platform

    return {
        "cpu_count": os.cpu_count(),
        "service_threads": options.threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def write_results(options: LoadOptions, records: Sequence[RunRecord], out: IO[str]) -> dict[str, Any]:
    """Writes the JSON document and prints the table; returns the document."""
    document = build_document(_settings(options), _machine(options), records)
    path = options.out or Path("bench-results") / "load.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(format_table(document), file=out)
    print(f"results: {path}", file=out)
    return document


def run_load_bench(options: LoadOptions, out: IO[str] | None = None) -> int:
    """Starts the stack, runs every run, writes the results; returns the exit code."""
    from tools.demo import report_failure, resolve_model, sigterm_as_interrupt

    stream = sys.stdout if out is None else out
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="polyspec-bench-load-"))
    try:
        drafter_dir, target_dir = resolve_model(options.drafter), resolve_model(options.target)
        log_dir.mkdir(parents=True, exist_ok=True)
        with sigterm_as_interrupt(), LocalStack(log_dir, options.log_level) as local:
            stack = start_stack(local, options, drafter_dir, target_dir)
            print(f"coordinator on {stack.address}", file=stream, flush=True)
            sampler = RssSampler({name: child.process.pid for name, child in stack.children.items()})
            with sampler.running():
                records = asyncio.run(run_load(stack, options, sampler, stream))
        write_results(options, records, stream)
    except KeyboardInterrupt:
        print("interrupted: every service was stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        code = report_failure(exc)
        print(f"service logs: {log_dir}", file=sys.stderr)
        return code
    return 0
