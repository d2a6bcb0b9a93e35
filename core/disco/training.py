"""Training a stop classifier from collected rounds, and choosing it by replayed tokens per second.

A collected round (``CollectedRound``) holds the features of every draft token of a full-length draft
(k tokens, no stop), each token's label (greedy: 1 when the target's own path continues with it; sampled:
the acceptance probability min(1, target_prob / draft_prob), a soft label) and how many leading tokens
were accepted. A stop rule can be *replayed* on it: it would have drafted up to its first stop
(the stopping token kept), so the round yields min(accepted, drafted) + 1 output tokens at the cost of
that many drafter steps and one target verification of that width (``replay_rate``; ``StepCosts``).
That replay keeps the rounds where the collection's full-length drafts put them, which a rule that stops
earlier would not; greedy collections also trace the drafter along the target's output
(``core.disco.replay``), and validation replays each rule exactly on those paths (``Validation``).
Sampled replay uses the round's own accepted count. SLEM rounds (a drafter and a target with different
tokenizers, greedy)
label a draft token 1 while the drafted text up to it lies inside the target tokens the round accepted,
and record the target tokens the round would commit for every draft length
(``CollectedRound.committed``), which the replay counts instead.

Training examples are the tokens up to and including the first rejected one (later tokens were drafted
after a token the target did not take, so whether they would be accepted is not defined). Models:
logistic regression and a one-hidden-layer MLP over standardized features, fitted with Adam on binary
cross-entropy (soft labels allowed) from a seeded generator. The model and threshold chosen are those
with the best replayed tokens per second on the validation rounds (``choose``), not the best AUC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.disco.classifier import ClassifierKind, StopClassifier
from core.disco.replay import ReplayPath, Scorer, path_scores, replay_path
from core.disco.thresholds import ThresholdReplay

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


@dataclass(frozen=True)
class CollectedRound:
    """One round drafted to its full length, with what the target made of it."""

    prompt_index: int
    features: tuple[tuple[float, ...], ...]  # [k][F]
    labels: tuple[float, ...]  # [k] in [0, 1]
    accepted: int  # leading draft tokens accepted (0..k)
    # [k] or empty: output tokens the round commits when its draft ends with token j (SLEM: target tokens,
    # which need not be as many as the drafter tokens); empty: min(accepted, j + 1) + 1
    committed: tuple[int, ...] = ()

    def committed_after(self, drafted: int) -> int:
        """Output tokens the round commits when its draft ends after ``drafted`` tokens."""
        if self.committed and drafted > 0:
            return self.committed[drafted - 1]
        return min(self.accepted, drafted) + 1


@dataclass(frozen=True)
class StepCosts:
    """Seconds of one drafter step and one target step (measured during collection).

    ``verify_seconds[j - 1]`` is what the target takes to verify a draft of j tokens (it feeds j + 1: the
    last committed token and the draft), measured per width after collecting: on a CPU a verification
    of 9 tokens costs well over one of 5, and a replay that charged every width alike would favour long
    drafts. Empty (SLEM rounds, collections made before it was measured): every verification costs
    ``target_seconds``, the mean over the collection's full-length rounds.
    """

    draft_seconds: float
    target_seconds: float
    verify_seconds: tuple[float, ...] = ()

    def verify(self, drafted: int) -> float:
        """Seconds of verifying a draft of ``drafted`` tokens (beyond the measured widths: the widest)."""
        table = self.verify_seconds
        if not table:
            return self.target_seconds
        return table[min(max(drafted, 1), len(table)) - 1]


@dataclass(frozen=True)
class FitSettings:
    seed: int = 0
    epochs: int = 300
    learning_rate: float = 0.05
    hidden: int = 16
    weight_decay: float = 1e-4


def training_examples(rounds: Sequence[CollectedRound]) -> tuple[Tensor, Tensor]:  # [n, F], [n]
    """Each round's tokens up to and including the first rejected one, with their labels."""
    features: list[tuple[float, ...]] = []
    labels: list[float] = []
    for item in rounds:
        last = min(item.accepted, len(item.features) - 1)
        features.extend(item.features[: last + 1])
        labels.extend(item.labels[: last + 1])
    return torch.tensor(features, dtype=torch.float32), torch.tensor(labels, dtype=torch.float32)


def fit(kind: ClassifierKind, features: Tensor, labels: Tensor, settings: FitSettings) -> StopClassifier:
    """A classifier of ``kind`` fitted to (features, labels); threshold 0.5 until ``choose`` sets one."""
    generator = torch.Generator().manual_seed(settings.seed)
    mean = features.mean(0)
    std = features.std(0).clamp_min(1e-6) if features.shape[0] > 1 else torch.ones(features.shape[1])
    width = 1 if kind is ClassifierKind.LOGISTIC else settings.hidden
    first = nn.Linear(features.shape[1], width)
    layers: list[nn.Module] = [first]
    second = None
    if kind is ClassifierKind.MLP:
        second = nn.Linear(width, 1)
        layers += [nn.ReLU(), second]
    with torch.no_grad():
        for layer in (first, second):
            if layer is not None:
                bound = 1.0 / layer.in_features**0.5
                layer.weight.copy_(
                    torch.empty_like(layer.weight).uniform_(-bound, bound, generator=generator)
                )
                layer.bias.zero_()
    model = nn.Sequential(*layers)
    inputs = (features - mean) / std
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(settings.epochs):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs)[:, 0], labels)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    weights = {"mean": mean, "std": std, "layer0.weight": first.weight, "layer0.bias": first.bias}
    if second is not None:
        weights |= {"layer1.weight": second.weight, "layer1.bias": second.bias}
    return StopClassifier.build(kind, weights, features.shape[1], 0.5)


@dataclass(frozen=True)
class Replay:
    """A stop rule replayed on rounds: output tokens per second and what the rounds did."""

    rate: float  # output tokens per second
    mean_drafted: float
    mean_accepted: float
    rounds: int


def replay_rate(
    rounds: Sequence[CollectedRound], stops: Sequence[Sequence[bool]], costs: StepCosts
) -> Replay:
    """The rounds replayed with a stop decision per draft token (True: the draft ends with it)."""
    tokens = seconds = drafted_total = accepted_total = 0.0
    for item, decisions in zip(rounds, stops, strict=True):
        drafted = next((j + 1 for j, stop in enumerate(decisions) if stop), len(decisions))
        accepted = min(item.accepted, drafted)
        tokens += item.committed_after(drafted)
        seconds += drafted * costs.draft_seconds + costs.verify(drafted)
        drafted_total += drafted
        accepted_total += accepted
    count = max(len(rounds), 1)
    return Replay(
        tokens / seconds if seconds else 0.0, drafted_total / count, accepted_total / count, len(rounds)
    )


def classifier_stops(classifier: StopClassifier, rounds: Sequence[CollectedRound]) -> list[list[float]]:
    """The classifier's continue probability for every draft token of every round."""
    return [
        classifier.continue_probs(torch.tensor(item.features, dtype=torch.float32)).tolist()
        if item.features
        else []
        for item in rounds
    ]


@dataclass(frozen=True)
class Choice:
    classifier: StopClassifier  # with the chosen threshold
    replay: Replay
    static: Replay  # the full-length drafts (no stop), for comparison


# A round's outcome under a stop rule: tokens drafted, accepted, and output tokens committed
Outcome = tuple[int, int, int]


@dataclass(frozen=True)
class Validation:
    """The validation prompts, as a stop rule is replayed on them.

    With ``paths`` (greedy collections record them: ``core.disco.replay``) the replay is exact: each
    rule runs its own rounds along the target's output. Without them it replays the collected
    full-length rounds where they stand (sampled and SLEM collections)."""

    rounds: Sequence[CollectedRound]
    paths: Sequence[ReplayPath] = ()
    k: int = 0  # the collected draft length (the paths' cap); 0: the longest round's

    @property
    def exact(self) -> bool:
        return bool(self.paths)

    def draft_length(self) -> int:
        return self.k or max((len(item.features) for item in self.rounds), default=1)

    def outcomes(self, scorer: Scorer) -> Callable[[float], list[Outcome]]:
        """The rounds' outcomes at any threshold for the rule that continues while ``scorer`` scores a
        token at or above it."""
        if self.paths:
            k = self.draft_length()
            scored = [(path, path_scores(path, k, scorer)) for path in self.paths]

            def along_paths(threshold: float) -> list[Outcome]:
                return [
                    (item.drafted, item.accepted, item.committed)
                    for path, scores in scored
                    for item in replay_path(path, scores, threshold, k)
                ]

            return along_paths
        rows = [list(scorer(item.features)) if item.features else [] for item in self.rounds]

        def on_rounds(threshold: float) -> list[Outcome]:
            outcomes = []
            for item, row in zip(self.rounds, rows, strict=True):
                drafted = next((j + 1 for j, p in enumerate(row) if p < threshold), len(row))
                outcomes.append((drafted, min(item.accepted, drafted), item.committed_after(drafted)))
            return outcomes

        return on_rounds


def classifier_scorer(classifier: StopClassifier) -> Scorer:
    def score(rows: Sequence[tuple[float, ...]]) -> list[float]:
        if not rows:
            return []
        values: list[float] = classifier.continue_probs(torch.tensor(rows, dtype=torch.float32)).tolist()
        return values

    return score


def never_stops(rows: Sequence[tuple[float, ...]]) -> list[float]:
    """The full-length drafts' scorer (static k)."""
    return [1.0] * len(rows)


def outcome_replay(outcomes: Sequence[Outcome], costs: StepCosts, fixed_seconds: float = 0.0) -> Replay:
    """Output tokens per second of these round outcomes at ``costs``, with ``fixed_seconds`` charged
    once beyond the rounds (the requests' prefill and start-up, for an end-to-end rate)."""
    rounds_seconds = sum(drafted * costs.draft_seconds + costs.verify(drafted) for drafted, _, _ in outcomes)
    seconds = rounds_seconds + fixed_seconds
    tokens = sum(committed for _, _, committed in outcomes)
    count = max(len(outcomes), 1)
    return Replay(
        tokens / seconds if seconds else 0.0,
        sum(drafted for drafted, _, _ in outcomes) / count,
        sum(accepted for _, accepted, _ in outcomes) / count,
        len(outcomes),
    )


def choose(
    candidates: Sequence[StopClassifier], validation: Validation | Sequence[CollectedRound], costs: StepCosts
) -> Choice:
    """The classifier and threshold with the best replayed tokens per second on ``validation``."""
    if not isinstance(validation, Validation):
        validation = Validation(validation)
    static = outcome_replay(validation.outcomes(never_stops)(1.0), costs)
    best: Choice | None = None
    for classifier in candidates:
        at = validation.outcomes(classifier_scorer(classifier))
        for threshold in THRESHOLDS:
            replay = outcome_replay(at(threshold), costs)
            if best is None or replay.rate > best.replay.rate:
                chosen = StopClassifier(classifier.kind, classifier.weights, threshold)
                best = Choice(chosen, replay, static)
    assert best is not None, "choose needs at least one candidate"
    return best


def threshold_replays(
    classifier: StopClassifier, validation: Validation | Sequence[CollectedRound]
) -> tuple[ThresholdReplay, ...]:
    """What the validation prompts do under each of ``THRESHOLDS`` (``core.disco.thresholds``): the
    output tokens and the rounds per draft length, from which the replay at any costs follows."""
    if not isinstance(validation, Validation):
        validation = Validation(validation)
    at = validation.outcomes(classifier_scorer(classifier))
    longest = validation.draft_length()
    replays = []
    for threshold in THRESHOLDS:
        outcomes = at(threshold)
        drafted = [0] * longest
        for length, _, _ in outcomes:
            if length > 0:
                drafted[min(length, longest) - 1] += 1
        tokens = sum(committed for length, _, committed in outcomes if length > 0)
        replays.append(ThresholdReplay(threshold, tokens, tuple(drafted)))
    return tuple(replays)
