"""The interleaved services schedule: rotation per prompt, per-prompt warm-up, refusals, progress.

``generate`` is a scripted stand-in for the SDK call: the unit under test is the scheduling.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from polyspec import FailedPreconditionError, UnavailableError

from tests.unit.bench.records import prompt, record
from tools.bench.harness import Coordinators, interleaved_order, run_interleaved, service_configurations
from tools.bench.options import BenchOptions
from tools.bench.records import BenchPrompt, Configuration, ConfigurationRun, PromptRecord

AR = Configuration("services", "ar", 0.0)
SD = Configuration("services", "sd", 0.0, "auto")
TLI = Configuration("services", "tli", 0.0, "auto")


def test_each_prompt_starts_one_configuration_further() -> None:
    configurations = ["ar", "sd", "tli", "slem"]
    assert interleaved_order(configurations, 0) == ["ar", "sd", "tli", "slem"]
    assert interleaved_order(configurations, 1) == ["sd", "tli", "slem", "ar"]
    assert interleaved_order(configurations, 3) == ["slem", "ar", "sd", "tli"]
    assert interleaved_order(configurations, 6) == ["tli", "slem", "ar", "sd"]
    assert interleaved_order([], 5) == []


def test_over_n_prompts_each_configuration_runs_first_once_and_in_every_position_once() -> None:
    configurations = list(range(5))
    orders = [interleaved_order(configurations, position) for position in range(10)]
    assert all(sorted(order) == configurations for order in orders)
    for slot in range(5):
        assert Counter(order[slot] for order in orders) == {c: 2 for c in configurations}


class ScriptedServer:
    """Answers like the coordinator: one record per call, or a refusal of the methods in ``refuse``
    from prompt ``refuse_from`` on; logs every call."""

    def __init__(self, refuse: frozenset[str] = frozenset(), refuse_from: int = 0) -> None:
        self.refuse, self.refuse_from = refuse, refuse_from
        self.calls: list[tuple[str, int]] = []

    def warm_up(self, bench_prompt: BenchPrompt) -> None:
        self.calls.append(("warm-up", bench_prompt.index))

    def generate(self, configuration: Configuration, bench_prompt: BenchPrompt) -> PromptRecord:
        self.calls.append((configuration.method, bench_prompt.index))
        if configuration.method in self.refuse and bench_prompt.index >= self.refuse_from:
            raise FailedPreconditionError(f"{configuration.method} needs a tokenizer it does not have")
        return record(bench_prompt.index, 4, 0.5 + 4.5 * bench_prompt.index)


def run_scripted(
    server: ScriptedServer,
    prompt_count: int,
    snapshots: list[list[tuple[str, int, str | None]]] | None = None,
) -> tuple[list[ConfigurationRun], str]:
    out = io.StringIO()

    def on_prompt(runs: list[ConfigurationRun]) -> None:
        if snapshots is not None:
            snapshots.append([(r.configuration.method, len(r.records), r.skipped) for r in runs])

    runs = run_interleaved(
        [AR, SD, TLI],
        [prompt(index) for index in range(prompt_count)],
        generate=server.generate,
        warm_up=server.warm_up,
        out=out,
        on_prompt=on_prompt,
    )
    return runs, out.getvalue()


def test_every_prompt_is_warmed_up_then_run_by_every_configuration_in_rotated_order() -> None:
    server = ScriptedServer()
    runs, _ = run_scripted(server, 4)
    assert server.calls == [
        ("warm-up", 0), ("ar", 0), ("sd", 0), ("tli", 0),
        ("warm-up", 1), ("sd", 1), ("tli", 1), ("ar", 1),
        ("warm-up", 2), ("tli", 2), ("ar", 2), ("sd", 2),
        ("warm-up", 3), ("ar", 3), ("sd", 3), ("tli", 3),
    ]  # fmt: skip
    assert [r.configuration for r in runs] == [AR, SD, TLI]
    for r in runs:
        assert r.skipped is None
        assert [record.prompt_index for record in r.records] == [0, 1, 2, 3]


def test_a_refused_configuration_is_skipped_with_the_message_and_never_tried_again() -> None:
    server = ScriptedServer(refuse=frozenset({"tli"}), refuse_from=1)
    snapshots: list[list[tuple[str, int, str | None]]] = []
    runs, progress = run_scripted(server, 4, snapshots)
    assert [call for call in server.calls if call[0] == "tli"] == [("tli", 0), ("tli", 1)]
    # Prompts 2 and 3 rotate over the two configurations left.
    assert server.calls[-6:] == [("warm-up", 2), ("ar", 2), ("sd", 2), ("warm-up", 3), ("sd", 3), ("ar", 3)]
    tli = runs[2]
    assert tli.records == []
    assert tli.skipped == "FAILED_PRECONDITION: tli needs a tokenizer it does not have"
    assert [len(r.records) for r in runs[:2]] == [4, 4]
    assert snapshots[0] == [("ar", 1, None), ("sd", 1, None), ("tli", 1, None)]
    assert snapshots[1] == [("ar", 2, None), ("sd", 2, None), ("tli", 0, tli.skipped)]
    assert snapshots[3] == [("ar", 4, None), ("sd", 4, None), ("tli", 0, tli.skipped)]
    lines = progress.splitlines()
    assert lines[0] == "  HumanEval/0: ar T=0 0.50s, sd [auto] T=0 0.50s, tli [auto] T=0 0.50s"
    assert lines[1] == (
        "  HumanEval/1: ar T=0 5.00s, sd [auto] T=0 5.00s, "
        "tli [auto] T=0 skipped (FAILED_PRECONDITION: tli needs a tokenizer it does not have)"
    )
    assert lines[3] == "  HumanEval/3: ar T=0 14.0s, sd [auto] T=0 14.0s"


def test_a_failure_that_is_not_a_refusal_stops_the_run() -> None:
    def generate(configuration: Configuration, bench_prompt: BenchPrompt) -> PromptRecord:
        raise UnavailableError("the target service is unreachable")

    with pytest.raises(UnavailableError):
        run_interleaved([AR], [prompt(0)], generate=generate, warm_up=lambda p: None, out=io.StringIO())


def test_services_configurations_put_ar_first_per_temperature() -> None:
    options = BenchOptions(
        drafter="d",
        target="t",
        algorithms=("sd", "ar"),
        temperatures=(0.0, 0.7),
        lookaheads=("auto", "static:3"),
    )
    labels = [configuration.label for configuration in service_configurations(options)]
    assert labels == [
        "services ar T=0", "services sd [auto] T=0", "services sd [static:3] T=0",
        "services ar T=0.7", "services sd [auto] T=0.7", "services sd [static:3] T=0.7",
    ]  # fmt: skip


def test_a_lookup_drafter_adds_its_own_and_combined_configurations_routed_to_their_coordinators() -> None:
    options = BenchOptions(drafter="d", target="t", algorithms=("sd",), lookup="ngram")
    labels = [configuration.label for configuration in service_configurations(options)]
    assert labels == [
        "services ar T=0", "services sd [auto] T=0", "services lookup [auto] T=0",
        "services sd+lookup [auto] T=0",
    ]  # fmt: skip
    coordinators = Coordinators("model:1", "lookup:2", "combined:3")

    def route(method: str, lookahead: str | None = "auto") -> tuple[str, str, str | None]:
        found = coordinators.route(Configuration("services", method, 0.0, lookahead))
        return found.address, found.algorithm, found.lookahead

    assert route("sd") == ("model:1", "sd", "auto")
    assert route("ar", None) == ("model:1", "ar", None)
    assert route("lookup") == ("lookup:2", "sd", "auto")
    assert route("tli+lookup") == ("combined:3", "tli", "auto")
    coordinators = Coordinators("model:1")
    assert route("sd+lookup") == ("model:1", "sd+lookup", "auto")  # refused by the server


def test_disco_lookaheads_run_on_the_coordinator_with_the_classifier(tmp_path: Path) -> None:
    options = BenchOptions(
        drafter="d",
        target="t",
        algorithms=("sd",),
        lookup="ngram",
        lookaheads=("auto", "disco", "disco:4", "auto+disco"),
        disco_artifact=tmp_path,
    )
    labels = [configuration.label for configuration in service_configurations(options)]
    assert labels == [
        "services ar T=0",
        "services sd [auto] T=0",
        "services sd [disco] T=0",
        "services sd [disco:4] T=0",
        "services sd [auto+disco] T=0",
        "services lookup [auto] T=0",
        "services sd+lookup [auto] T=0",
    ]  # fmt: skip  (the lookup coordinators have no classifier: only the plain lookaheads there)
    coordinators = Coordinators("model:1", "lookup:2", "combined:3", disco="disco:4")
    routes = {
        c.label: (r.address, r.algorithm, r.lookahead)
        for c in service_configurations(options)
        for r in [coordinators.route(c)]
    }
    assert routes["services sd [auto] T=0"] == ("model:1", "sd", "auto")  # auto without the classifier
    assert routes["services sd [auto+disco] T=0"] == ("disco:4", "sd", "auto")  # the same policy with it
    assert routes["services sd [disco] T=0"] == ("disco:4", "sd", "disco")
    assert routes["services sd [disco:4] T=0"] == ("disco:4", "sd", "disco:4")
    assert coordinators.addresses == ["model:1", "lookup:2", "combined:3", "disco:4"]
    with pytest.raises(ValueError, match="no coordinator with a stop classifier"):
        Coordinators("model:1").route(Configuration("services", "sd", 0.0, "disco"))
