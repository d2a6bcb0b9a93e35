"""SLEM collection: DISCO labels for a drafter and a target with different tokenizers.

Toy models on two real toy tokenizers (a SentencePiece-style drafter, a byte-level target) that like to
write one reference text. Checked: the collection follows the target's greedy path; a drafter that writes
the target's text is labelled 1 everywhere; a planted disagreement is labelled 0 from its token on; the
target tokens a round would commit for every shorter draft are what the coordinator's SLEM round commits
for it; replay counts them; training on the rounds writes a ``slem`` artifact; sampling is refused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from coordinator.loop.round import candidates, commit, decide, draft_call, score_call
from coordinator.loop.snapshot import DrafterView, RoundSnapshot
from core.disco.artifact import PairFingerprint, load_artifact
from core.disco.training import FitSettings, StepCosts, replay_rate
from core.modelcalls import DraftOutcome
from core.sampling import SamplingConfig
from tests.support.laws import greedy_output
from tests.support.toy_lm import CODE_REFERENCE, ReferenceLM
from tests.support.toy_service import ToyModel, toy_info
from tests.support.toy_tokenizers import (
    CODE_CORPUS,
    byte_level_toy,
    byte_level_transformers,
    sentencepiece_transformers,
    transformers_tokenizer,
)
from tools.disco.collect import Collection, CollectSettings, load_collection, save_collection
from tools.disco.slem import collect_slem, commits_after, slem_frame, slem_pair
from tools.disco.train import TrainInputs, train_artifact

K = 4
PROMPTS = [
    (0, "def fibonacci(n):\n"),
    (1, "def fibonacci(n):\n    if n < 2:\n        return"),
    (2, "def fib"),
    (3, "def fibonacci(n):\n    if n < 2:\n        return n\n    return fib"),
]
# the drafter's text departs from the target's here (the target writes "n - 1")
PLANTED = CODE_REFERENCE.index("(n - 1)") + len("(n ")


def _model(tokenizer: Any, *, reference: str, seed: int, name: str) -> ToyModel:
    lm = ReferenceLM(tokenizer, seed=seed, reference=reference, bonus=8.0)
    info = toy_info(
        lm, tokenizer, model_name=name, eos_token_ids=[lm.eos], max_context_tokens=4096, max_draft_tokens=16
    )
    return ToyModel(lm, info, max_support=16)


@pytest.fixture(scope="module")
def drafter_tokenizer() -> Any:
    return sentencepiece_transformers()


@pytest.fixture(scope="module")
def char_target() -> ToyModel:
    """A target that spells every text byte by byte (no merges), writing the reference."""
    tokenizer = transformers_tokenizer(byte_level_toy(257, CODE_CORPUS), eos_token="<|endoftext|>")
    return _model(tokenizer, reference=CODE_REFERENCE, seed=11, name="toy-bytes")


@pytest.fixture(scope="module")
def bpe_target() -> ToyModel:
    """A byte-level BPE target writing the reference (its tokens merge across the drafter's)."""
    return _model(byte_level_transformers(), reference=CODE_REFERENCE, seed=11, name="toy-bpe")


def _drafter(tokenizer: Any, reference: str = CODE_REFERENCE) -> ToyModel:
    return _model(tokenizer, reference=reference, seed=12, name="toy-spm")


def _collect(drafter: ToyModel, target: ToyModel, max_new_tokens: int, prompts: Any = PROMPTS) -> Collection:
    pair = slem_pair(drafter.info, target.info)
    settings = CollectSettings(k=K, max_new_tokens=max_new_tokens)
    return collect_slem(drafter, target, pair, prompts, settings=settings)


def test_the_collection_follows_the_targets_greedy_path(drafter_tokenizer: Any, bpe_target: ToyModel) -> None:
    drafter = _drafter(drafter_tokenizer, CODE_REFERENCE.replace("n - 2", "n + 2"))
    collection = _collect(drafter, bpe_target, 24)
    pair = slem_pair(drafter.info, bpe_target.info)
    settings = CollectSettings(k=K, max_new_tokens=24)
    for index, text in PROMPTS:
        prompt = slem_frame(pair, index, text, settings).plan.target_prompt
        eos = bpe_target.info.eos_token_ids
        reference = greedy_output(bpe_target.lm, 24, prompt=prompt, eos=eos)
        assert tuple(collection.outputs[index]) == tuple(reference), index
    labels = [label for r in collection.rounds for label in r.labels]
    assert 0.0 in labels and 1.0 in labels
    for item in collection.rounds:
        assert len(item.features) == len(item.labels) == len(item.committed) <= K
        assert item.labels == (1.0,) * item.accepted + (0.0,) * (len(item.labels) - item.accepted)
    for index, _ in PROMPTS:  # the full drafts' commits are the output, round by round
        commits = [r.committed[-1] for r in collection.rounds if r.prompt_index == index]
        assert sum(commits[:-1]) < len(collection.outputs[index]) <= sum(commits)


def test_a_drafter_writing_the_targets_text_is_labelled_one(
    drafter_tokenizer: Any, char_target: ToyModel
) -> None:
    collection = _collect(_drafter(drafter_tokenizer), char_target, 30, PROMPTS[:2])
    assert collection.rounds
    for item in collection.rounds:
        assert item.labels == (1.0,) * K and item.accepted == K
        assert list(item.committed) == sorted(item.committed) and item.committed[0] >= 2


def test_a_planted_disagreement_is_labelled_zero_from_its_token_on(
    drafter_tokenizer: Any, char_target: ToyModel
) -> None:
    drafter = _drafter(drafter_tokenizer, CODE_REFERENCE.replace("(n - 1)", "(n + 1)"))
    prompt = CODE_REFERENCE[: PLANTED - 12]
    collection = _collect(drafter, char_target, 30, [(0, prompt)])
    offset = len(prompt)  # the target spells one byte per token
    for item in collection.rounds:
        if item.accepted < len(item.labels):
            break
        offset += item.committed[-1]
    else:
        raise AssertionError("no draft token was rejected")
    assert offset + item.committed[-1] - 1 == PLANTED  # accepted up to the planted byte, not beyond
    assert item.labels == (1.0,) * item.accepted + (0.0,) * (len(item.labels) - item.accepted)


def test_commits_per_draft_length_are_what_a_shorter_draft_commits(
    drafter_tokenizer: Any, bpe_target: ToyModel
) -> None:
    drafter = _drafter(drafter_tokenizer, CODE_REFERENCE.replace("a + b", "a - b"))
    collection = _collect(drafter, bpe_target, 8)
    pair = slem_pair(drafter.info, bpe_target.info)
    for index, text in PROMPTS:
        first = next(r for r in collection.rounds if r.prompt_index == index)
        frame = slem_frame(pair, index, text, CollectSettings(k=K, max_new_tokens=8))
        snapshot = RoundSnapshot(frame, 0, (), DrafterView(), True)
        call = replace(draft_call(snapshot, K, 0.0), return_features=True)
        drafted = drafter.draft(call)
        assert drafted.features == first.features
        for length in range(1, len(drafted.draft_tokens) + 1):
            shorter = DraftOutcome(drafted.draft_tokens[:length], drafted.draft_probs[:length], drafted.stats)
            proposed = candidates(snapshot, call, shorter)
            verified = decide(snapshot, proposed, bpe_target.score(score_call(snapshot, proposed)))
            expected = len(commit(snapshot, verified).tokens)
            assert first.committed[length - 1] == expected, (index, length)
            # nothing of the target's path known: the candidates are scored (the rare path, exercised)
            assert commits_after(bpe_target, snapshot, call, shorter, known=()) == expected


def test_replay_counts_target_tokens_and_training_writes_a_slem_artifact(
    drafter_tokenizer: Any, bpe_target: ToyModel, tmp_path: Path
) -> None:
    drafter = _drafter(drafter_tokenizer, CODE_REFERENCE.replace("n - 2", "n + 2"))
    collection = _collect(drafter, bpe_target, 16)
    costs = StepCosts(draft_seconds=0.1, target_seconds=1.0)
    full = replay_rate(collection.rounds, [[False] * len(r.labels) for r in collection.rounds], costs)
    seconds = sum(len(r.labels) * 0.1 + 1.0 for r in collection.rounds)
    assert full.rate == pytest.approx(sum(r.committed[-1] for r in collection.rounds) / seconds)
    header = {"pair": {"drafter_fingerprint": "d", "target_fingerprint": "t"}, "regime": "slem"}
    save_collection(tmp_path / "rounds.json", collection, header)
    loaded_header, rounds, _ = load_collection(tmp_path / "rounds.json")
    assert rounds == collection.rounds and loaded_header["regime"] == "slem"
    fingerprints = PairFingerprint(drafter.info.model_fingerprint, bpe_target.info.model_fingerprint)
    inputs = TrainInputs(fingerprints, "slem", rounds, costs)
    out, fit = tmp_path / "artifact", FitSettings(epochs=20)
    train_artifact(inputs, out, train=range(0, 2), validation=range(2, 4), settings=fit)
    assert load_artifact(tmp_path / "artifact").regime == "slem"


def test_sampled_slem_labels_are_refused(drafter_tokenizer: Any, bpe_target: ToyModel) -> None:
    drafter = _drafter(drafter_tokenizer)
    pair = slem_pair(drafter.info, bpe_target.info)
    settings = CollectSettings(k=K, max_new_tokens=4, sampling=SamplingConfig(0.7))
    with pytest.raises(ValueError, match="temperature 0"):
        collect_slem(drafter, bpe_target, pair, PROMPTS[:1], settings=settings)
    with pytest.raises(ValueError, match="share one vocabulary"):
        slem_pair(bpe_target.info, bpe_target.info)
