"""``polyspec disco replay`` (``tools.disco.whatif``): static, confidence, classifier and oracle stops
replayed exactly on a greedy collection's traced paths, at the collection's costs or a deployment's."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.disco.replay import ReplayPath, oracle_scores, path_scores, replay_path
from core.disco.training import StepCosts, outcome_replay
from core.sampling import SamplingConfig
from tests.support.laws import greedy_output
from tests.support.toy_lm import random_lm
from tests.support.toy_service import ToyModel, bare_info
from tests.unit.disco.test_disco_train_command import PAIR, train
from tools.disco.collect import CollectSettings, collect, save_collection, trace_path
from tools.disco.whatif import deployment_costs, what_if, with_round_overhead
from tools.main import build_parser

VOCAB, K, LENGTH = 6, 4, 24
GREEDY = SamplingConfig(0.0)
COSTS = deployment_costs(draft_ms=10, verify_ms=30, verify_ms_per_token=2, round_ms=1, k=K)


def paths(prompts: range) -> list[ReplayPath]:
    drafter, target = (ToyModel(random_lm(seed, VOCAB), bare_info(VOCAB)) for seed in (2, 1))
    traced = []
    for index in prompts:
        prompt = [index % VOCAB, (index * 7) % VOCAB]
        output = list(greedy_output(target.lm, LENGTH, prompt=tuple(prompt)))
        traced.append(trace_path(drafter, index, prompt, output, K))
    return traced


def test_the_oracle_stops_exactly_on_the_first_rejected_token() -> None:
    for path in paths(range(4)):
        rounds = replay_path(path, oracle_scores(path, K), 0.5, K)
        start = 0
        for item in rounds:
            cap = min(K, len(path.matches) - start)
            rejected = next((j for j in range(cap) if not path.matches[start + j]), None)
            if rejected is None:
                assert (item.drafted, item.accepted) == (cap, cap)
            else:
                assert (item.drafted, item.accepted) == (rejected + 1, rejected)
            start += item.committed
        assert start == len(path.matches)


def test_deployment_costs_charge_the_tokens_fed_and_the_round() -> None:
    assert COSTS.draft_seconds == pytest.approx(0.010)
    assert [COSTS.verify(j) for j in (1, 4)] == pytest.approx([0.035, 0.041])
    collected = StepCosts(0.02, 0.3, (0.3, 0.31, 0.32, 0.33))
    assert with_round_overhead(collected, 18, K).verify(3) == pytest.approx(0.338)


def test_each_rule_is_reported_as_it_replays() -> None:
    traced = paths(range(8))
    result = what_if(traced, K, COSTS, choose_on=range(0, 4), test=range(4, 8))
    assert [rule.rule.split("<")[0] for rule in result.rules] == [
        f"static:{result.best_static}",
        "confidence",
        "oracle",
    ]

    def static_rate(length: int, prompts: range) -> float:
        outcomes = []
        for path in traced:
            if path.prompt_index in prompts:
                scores = path_scores(path, K, lambda rows: [0.0 if r[5] >= length - 1 else 1.0 for r in rows])
                outcomes += [(r.drafted, r.accepted, r.committed) for r in replay_path(path, scores, 0.5, K)]
        return outcome_replay(outcomes, COSTS).rate

    best = max(range(1, K + 1), key=lambda length: static_rate(length, range(0, 4)))
    static, confidence, oracle = result.rules
    assert result.best_static == best
    assert static.rate == pytest.approx(static_rate(best, range(4, 8)))
    assert (static.speedup, static.low, static.high) == pytest.approx((1.0, 1.0, 1.0))
    threshold = float(confidence.rule.split("<")[1])
    outcomes = []
    for path in traced[4:]:
        scores = path_scores(path, K, lambda rows: [r[0] for r in rows])
        outcomes += [(r.drafted, r.accepted, r.committed) for r in replay_path(path, scores, threshold, K)]
    assert confidence.rate == pytest.approx(outcome_replay(outcomes, COSTS).rate)
    ceiling = [
        (r.drafted, r.accepted, r.committed)
        for path in traced[4:]
        for r in replay_path(path, oracle_scores(path, K), 0.5, K)
    ]
    assert oracle.rate == pytest.approx(outcome_replay(ceiling, COSTS).rate)
    assert oracle.low <= oracle.speedup <= oracle.high


def test_a_request_cost_dilutes_every_speedup_alike() -> None:
    traced = paths(range(8))
    rounds_only = what_if(traced, K, COSTS, choose_on=range(0, 4), test=range(4, 8))
    request = 0.5
    charged = what_if(traced, K, COSTS, choose_on=range(0, 4), test=range(4, 8), request_seconds=request)
    assert charged.best_static == rounds_only.best_static
    for plain, diluted in zip(rounds_only.rules, charged.rules, strict=True):
        assert diluted.rule == plain.rule  # greedy: every rule commits the same tokens, so no choice moves
        tokens = sum(len(path.matches) for path in traced[4:])
        assert diluted.rate == pytest.approx(tokens / (tokens / plain.rate + 4 * request))
        assert min(plain.speedup, 1.0) <= diluted.speedup <= max(plain.speedup, 1.0)
    oracle_plain, oracle_charged = rounds_only.rules[-1], charged.rules[-1]
    assert oracle_plain.speedup != pytest.approx(1.0)
    assert abs(oracle_charged.speedup - 1.0) < abs(oracle_plain.speedup - 1.0)


def test_prompt_ranges_without_paths_are_refused() -> None:
    with pytest.raises(
        ValueError, match="no traced path for the choice prompts 0-3 or the test prompts 20-29"
    ):
        what_if(paths(range(4)), K, COSTS, choose_on=range(0, 4), test=range(20, 30))


def collection_file(path: Path, temperature: float) -> Path:
    drafter, target = (ToyModel(random_lm(seed, VOCAB), bare_info(VOCAB)) for seed in (2, 1))
    settings = CollectSettings(k=K, max_new_tokens=12, sampling=SamplingConfig(temperature))
    rounds = collect(drafter, target, [(i, [i % VOCAB]) for i in range(6)], settings)
    regime = "greedy" if temperature == 0 else "sampled"
    save_collection(path, rounds, {"pair": PAIR, "regime": regime, "settings": {"k": K}})
    return path


def replay_command(*argv: str) -> int:
    args = build_parser().parse_args(["disco", "replay", *argv])
    code: int = args.handler(args)
    return code


def test_the_command_prints_every_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(collection_file(tmp_path / "greedy.json", 0.0))
    ranges = ("--choose-prompts", "0-2", "--test-prompts", "3-5")
    assert replay_command("--data", data, *ranges) == 0
    printed = capsys.readouterr().out
    assert "static:" in printed and "confidence<" in printed and "oracle" in printed
    assert replay_command("--data", data, *ranges, "--draft-ms", "8", "--verify-ms", "12") == 0
    assert (
        "drafter step 8.0 ms; verification of 1.. draft tokens (round included) 12, 12"
        in capsys.readouterr().out
    )
    assert replay_command("--data", data, *ranges, "--request-ms", "250") == 0
    assert "a request's prefill and start-up 250 ms" in capsys.readouterr().out
    assert train([Path(data)], tmp_path / "artifact") == 0
    capsys.readouterr()
    assert replay_command("--data", data, *ranges, "--artifact", str(tmp_path / "artifact")) == 0
    assert "classifier<" in capsys.readouterr().out


def test_the_command_refuses_what_it_cannot_replay(tmp_path: Path) -> None:
    greedy = str(collection_file(tmp_path / "greedy.json", 0.0))
    with pytest.raises(SystemExit, match=r"--draft-ms and --verify-ms go together"):
        replay_command("--data", greedy, "--draft-ms", "8")
    with pytest.raises(SystemExit, match=r"--round-ms must be a finite number >= 0, got -1\.0"):
        replay_command("--data", greedy, "--round-ms", "-1")
    with pytest.raises(SystemExit, match=r"--request-ms must be a finite number >= 0, got inf"):
        replay_command("--data", greedy, "--request-ms", "inf")
    with pytest.raises(SystemExit, match="disco replay: no traced path for the choice prompts 100-119"):
        replay_command("--data", greedy)
    sampled = str(collection_file(tmp_path / "sampled.json", 0.7))
    with pytest.raises(SystemExit, match="hold no replay paths"):
        replay_command("--data", sampled)
    with pytest.raises(SystemExit, match=r"disco replay: .*classifier\.json"):
        replay_command("--data", greedy, "--artifact", str(tmp_path / "missing"))
