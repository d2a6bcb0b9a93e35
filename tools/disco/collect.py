"""Collection: run prompts through a drafter and a target, recording each draft token's features and label.

Every round drafts the full k tokens (no stop rule: any rule can be replayed afterwards) with
``return_features`` (the drafter service's own feature path, ``core.disco.features``) and scores them:

- greedy: a token's label is 1 while the draft follows the target's own greedy path, so the rounds follow
  the target's output; after a prompt's rounds, ``trace_path`` records what the drafter drafts from every
  position of that output (``core.disco.replay``), on which any stop rule replays exactly, its own
  rounds and all;
- sampled: a token's label is its acceptance probability min(1, target_prob / draft_prob), and the round
  accepts by the speculative-sampling rule with a seeded generator (recovered or bonus token after).

A drafter and a target with different tokenizers collect SLEM labels instead (``tools.disco.slem``).

The models are anything with the model service's ``draft`` and ``score`` on domain types: the engines of
``services.model.engine`` loaded in-process (``polyspec disco collect``), or the test kits' toy models.
Step costs come from the calls' own ``ForwardStats``: a drafter step and a target verification averaged
over the rounds (a prompt's first round, which prefills it, left out), and, after them, the target's
verification per draft width (``measure_verify_seconds``), which the replay charges.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from core.disco.features import FEATURE_NAMES, FEATURE_VERSION
from core.disco.replay import ReplayPath
from core.disco.training import CollectedRound, StepCosts
from core.modelcalls import ContextRef, DraftCall, DraftOutcome, ForwardStats, ScoreCall, ScoreOutcome
from core.sampling import SamplingConfig

COLLECTION_FORMAT = "polyspec-disco-rounds"
VERIFY_REPEATS = 5  # passes over the draft widths when measuring verification costs


class DraftScore(Protocol):
    def draft(self, call: DraftCall) -> DraftOutcome: ...

    def score(self, call: ScoreCall) -> ScoreOutcome: ...


@dataclass(frozen=True)
class CollectSettings:
    k: int = 8
    max_new_tokens: int = 64
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(0.0))
    seed: int = 0
    stop_token_ids: frozenset[int] = frozenset()  # the target's end of sequence: a prompt's output ends


@dataclass
class Collection:
    """Collected rounds and the step costs measured while collecting them."""

    rounds: list[CollectedRound]
    draft_seconds: float = 0.0
    draft_forwards: int = 0
    target_seconds: float = 0.0
    target_calls: int = 0
    outputs: dict[int, list[int]] = field(default_factory=dict)  # each prompt's output tokens
    verify_seconds: tuple[float, ...] = ()  # per draft width 1..k (``measure_verify_seconds``)
    paths: list[ReplayPath] = field(default_factory=list)  # greedy: each prompt's (``trace_path``)

    def time_round(self, drafted: ForwardStats, scored: ForwardStats) -> None:
        """Adds one round's compute to the step costs. The caller skips a prompt's first round: both
        models prefill the prompt in it, which a decoding step never does (with 64 output tokens and
        k = 8 that round is about a tenth of the rounds and would add half to the target's mean)."""
        self.draft_seconds += drafted.compute_seconds
        self.draft_forwards += max(drafted.forwards, 1)
        self.target_seconds += scored.compute_seconds
        self.target_calls += 1

    def costs(self) -> StepCosts:
        draft = self.draft_seconds / self.draft_forwards if self.draft_forwards else 0.0
        target = self.target_seconds / self.target_calls if self.target_calls else 0.0
        return StepCosts(draft, target, self.verify_seconds)


def collect(
    drafter: DraftScore,
    target: DraftScore,
    prompts: Sequence[tuple[int, Sequence[int]]],  # (prompt index, prompt tokens)
    settings: CollectSettings,
    progress: Callable[[int], None] = lambda tokens: None,
) -> Collection:
    """Runs every prompt to ``max_new_tokens`` (or the target's stop token); see the module docstring."""
    collection = Collection([])
    generator = torch.Generator().manual_seed(settings.seed)
    for index, prompt in prompts:
        output: list[int] = []
        while len(output) < settings.max_new_tokens:
            committed = _round(
                drafter,
                target,
                index,
                [*prompt, *output],
                len(prompt),
                settings=settings,
                generator=generator,
                collection=collection,
            )
            output.extend(committed)
            progress(len(committed))
            if settings.stop_token_ids.intersection(committed):
                break
        collection.outputs[index] = output[: settings.max_new_tokens]
        if settings.sampling.is_greedy:
            collection.paths.append(trace_path(drafter, index, prompt, collection.outputs[index], settings.k))
    if prompts:
        index, prompt = prompts[-1]
        context = [*prompt, *collection.outputs[index]]
        collection.verify_seconds = measure_verify_seconds(target, context, settings.k)
    return collection


def trace_path(
    drafter: DraftScore, index: int, prompt: Sequence[int], output: Sequence[int], k: int
) -> ReplayPath:
    """What the greedy drafter drafts from every position of the target's ``output``: its next token's
    features there, whether that token is the output's, and where it is not, the k - 1 tokens it drafts
    after its own. One-token drafts along the output (each feeds the output token before it), and a
    k-token draft at each mismatch; the features come from the drafter's own path
    (``return_features``), as in the rounds and in serving."""
    name = f"disco/{index}/trace"
    greedy = SamplingConfig(0.0)
    features: list[tuple[float, ...]] = []
    matches: list[bool] = []
    continuations: dict[int, tuple[tuple[float, ...], ...]] = {}
    for position, token in enumerate(output):
        context = ContextRef.whole(name, [*prompt, *output[:position]])
        one = drafter.draft(DraftCall(context, 1, greedy, 0, return_features=True))
        features.append(one.features[0])
        matches.append(one.draft_tokens[0] == token)
        if not matches[-1]:
            drafted = drafter.draft(DraftCall(context, k, greedy, 0, return_features=True))
            continuations[position] = tuple(drafted.features[1:])
    return ReplayPath(index, tuple(features), tuple(matches), continuations)


def measure_verify_seconds(
    target: DraftScore, context: Sequence[int], k: int, repeats: int = VERIFY_REPEATS
) -> tuple[float, ...]:
    """The median seconds of the target verifying a draft of 1..k tokens after ``context``.

    The context is scored once first (its prefill, not counted); every later call reuses its cache and
    feeds the last context token and the draft, as a verification in the loop does. The widths are
    interleaved over ``repeats`` passes so a slow spell of the machine touches them alike. Empty if the
    target reports no compute time (a model without timings).
    """
    reference = ContextRef.whole("disco/verify-costs", list(context))
    filler = [context[-1]] * k
    greedy = SamplingConfig(0.0)
    target.score(ScoreCall(reference, tuple(filler), None, greedy, 0))
    samples: dict[int, list[float]] = {width: [] for width in range(1, k + 1)}
    for _ in range(repeats):
        for width, seconds in samples.items():
            scored = target.score(ScoreCall(reference, tuple(filler[:width]), None, greedy, 0))
            seconds.append(scored.stats.compute_seconds)
    table = tuple(statistics.median(values) for values in samples.values())
    return table if all(seconds > 0 for seconds in table) else ()


def _round(
    drafter: DraftScore,
    target: DraftScore,
    index: int,
    context: list[int],
    prompt_length: int,
    *,
    settings: CollectSettings,
    generator: torch.Generator,
    collection: Collection,
) -> list[int]:
    """One full-length round: records it (and its compute, unless it is the prompt's first) and returns
    the tokens it commits."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    drafted = drafter.draft(
        DraftCall(
            ContextRef.whole(f"disco/{index}/drafter", context),
            settings.k,
            settings.sampling,
            seed,
            return_features=True,
        )
    )
    greedy = settings.sampling.is_greedy
    scored = target.score(
        ScoreCall(
            ContextRef.whole(f"disco/{index}/target", context),
            drafted.draft_tokens,
            None if greedy else drafted.draft_probs,
            settings.sampling,
            seed + 1,
        )
    )
    labels, accepted = _labels(drafted, scored, greedy, generator)
    collection.rounds.append(CollectedRound(index, drafted.features, labels, accepted))
    if len(context) > prompt_length:
        collection.time_round(drafted.stats, scored.stats)
    tokens = list(drafted.draft_tokens[:accepted])
    if greedy or accepted == len(drafted.draft_tokens):
        return [*tokens, scored.target_samples[accepted]]
    return [*tokens, scored.recovered_tokens[accepted]]


def _labels(
    drafted: DraftOutcome, scored: ScoreOutcome, greedy: bool, generator: torch.Generator
) -> tuple[tuple[float, ...], int]:
    """Each draft token's label and the number of leading tokens accepted."""
    tokens = drafted.draft_tokens
    if greedy:
        labels = [1.0 if t == s else 0.0 for t, s in zip(tokens, scored.target_samples, strict=False)]
        accepted = next((j for j, label in enumerate(labels) if label == 0.0), len(labels))
        return tuple(labels), accepted
    labels = []
    for token, proposal, target_prob in zip(
        tokens, drafted.draft_probs, scored.candidate_target_probs, strict=True
    ):
        draft_prob = dict(zip(proposal.token_ids, proposal.probs, strict=True))[token]
        labels.append(min(1.0, target_prob / draft_prob) if draft_prob > 0 else 0.0)
    uniforms = torch.rand(len(labels), generator=generator, dtype=torch.float64).tolist()
    accepted = next((j for j, (u, p) in enumerate(zip(uniforms, labels, strict=True)) if u >= p), len(labels))
    return tuple(labels), accepted


def save_collection(path: Path, collection: Collection, header: dict[str, Any]) -> None:
    """Writes the rounds as JSON with the pair's identity, the regime and the step costs."""
    document = {
        "format": COLLECTION_FORMAT,
        "features": {"names": list(FEATURE_NAMES), "version": FEATURE_VERSION},
        **header,
        "costs": asdict(collection.costs()),
        "rounds": [asdict(item) for item in collection.rounds],
        "paths": [_path_document(path) for path in collection.paths],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")


def _path_document(path: ReplayPath) -> dict[str, Any]:
    return {
        "prompt_index": path.prompt_index,
        "features": [list(row) for row in path.features],
        "matches": list(path.matches),
        "continuations": {str(m): [list(row) for row in rows] for m, rows in path.continuations.items()},
    }


def _path_of(item: Mapping[str, Any]) -> ReplayPath:
    def rows(values: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(v) for v in row) for row in values)

    return ReplayPath(
        int(item["prompt_index"]),
        rows(item["features"]),
        tuple(bool(v) for v in item["matches"]),
        {int(m): rows(values) for m, values in item["continuations"].items()},
    )


def load_paths(path: Path) -> list[ReplayPath]:
    """The greedy replay paths of a collection file (none for older, sampled and SLEM files)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return [_path_of(item) for item in document.get("paths", ())]


def load_collection(path: Path) -> tuple[dict[str, Any], list[CollectedRound], StepCosts]:
    """The header, rounds and step costs of a collection file; ``ValueError`` for another file."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format") != COLLECTION_FORMAT:
        raise ValueError(f"{path}: not a {COLLECTION_FORMAT} file")
    if document.get("features") != {"names": list(FEATURE_NAMES), "version": FEATURE_VERSION}:
        raise ValueError(f"{path}: collected with other features than this build's {list(FEATURE_NAMES)}")
    rounds = [
        CollectedRound(
            int(item["prompt_index"]),
            tuple(tuple(float(v) for v in token) for token in item["features"]),
            tuple(float(v) for v in item["labels"]),
            int(item["accepted"]),
            tuple(int(v) for v in item.get("committed", ())),
        )
        for item in document["rounds"]
    ]
    named = document["costs"]
    verify = tuple(float(v) for v in named.get("verify_seconds", ()))
    costs = StepCosts(float(named["draft_seconds"]), float(named["target_seconds"]), verify)
    kept_out = ("rounds", "paths", "costs", "features", "format")
    header = {k: v for k, v in document.items() if k not in kept_out}
    return header, rounds, costs
