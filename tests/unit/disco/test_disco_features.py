"""DISCO's features: their values, and one code path for serving (the stop rule) and collection."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from core.disco.features import FEATURE_NAMES, token_features
from core.drafting import DraftRule, draft_rows
from core.modelcalls import ContextRef, DraftCall
from core.sampling import SamplingConfig, warp_probs
from services.model.classifiers import StopClassifierStore
from tests.support.toy_lm import random_lm
from tests.support.toy_service import ToyModel, bare_info
from tests.unit.disco.helpers import artifact_of, token_prob_classifier

VOCAB = 8


def test_feature_values_by_hand() -> None:
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125, 0.0]])
    values = token_features(probs, torch.tensor([1]), position=3)[0].tolist()
    entropy = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 2 * 0.125 * math.log(0.125))
    expected = [0.25, 0.5, 0.25, 0.125, entropy, 3.0]
    assert values == pytest.approx(expected, rel=1e-6)
    assert len(FEATURE_NAMES) == len(values)


def _table(seed: int) -> Tensor:  # [VOCAB + 1, VOCAB]: logits after each previous token (VOCAB: start)
    return 2.0 * torch.randn(VOCAB + 1, VOCAB, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("config", [SamplingConfig(0.0), SamplingConfig(0.8, top_k=5), SamplingConfig(1.0)])
def test_the_stop_rule_sees_the_features_collection_returns(config: SamplingConfig) -> None:
    """The features a stop classifier judges (serving) are those ``keep_features`` returns (collection),
    and both are ``token_features`` of the untruncated warped distribution (greedy: temperature 1)."""
    table = _table(4)
    seen: list[Tensor] = []

    def recorder(features: Tensor) -> Tensor:
        seen.append(features.clone())
        return torch.zeros(features.shape[0], dtype=torch.bool)

    rule = DraftRule(5, stop_classifier=recorder, keep_features=True)
    drafts = draft_rows(
        table[VOCAB].unsqueeze(0),
        lambda rows, tokens: table[tokens],
        rule,
        config=config,
        max_support=3,  # the cap truncates the proposal, never the features' distribution
        generator=torch.Generator().manual_seed(2),
    )
    tokens, _ = drafts.row(0)
    collected = torch.tensor(drafts.row_features(0))
    assert torch.equal(torch.cat(seen), collected)
    unit = SamplingConfig(1.0) if config.is_greedy else config
    previous = [VOCAB, *tokens[:-1]]
    for position, (row, token) in enumerate(zip(previous, tokens, strict=True)):
        probs = warp_probs(table[row].unsqueeze(0), unit)
        direct = token_features(probs, torch.tensor([token]), position)[0]
        assert torch.equal(collected[position], direct)


def test_a_toy_drafter_returns_features_and_stops_on_its_classifier() -> None:
    model = ToyModel(random_lm(3, VOCAB), bare_info(VOCAB))
    artifact = artifact_of(token_prob_classifier(threshold=0.5))
    model.stop_classifiers.register("c", artifact.spec_json, artifact.weights)
    call = DraftCall(ContextRef.whole("s", [0]), 6, SamplingConfig(1.0), seed=1, return_features=True)
    stopped_somewhere = False
    for seed in range(20):
        free = model.draft(replace(call, seed=seed))
        ruled = model.draft(replace(call, seed=seed, stop_classifier_id="c"))
        assert len(free.features) == len(free.draft_tokens)
        cut = next((j + 1 for j, f in enumerate(free.features) if f[0] < 0.5), len(free.draft_tokens))
        assert ruled.draft_tokens == free.draft_tokens[:cut]  # same draws; the stopping token kept
        stopped_somewhere |= cut < len(free.draft_tokens)
    assert stopped_somewhere


def test_an_unknown_classifier_is_a_precondition_failure() -> None:
    from core.errors import UnknownStopClassifierError

    with pytest.raises(UnknownStopClassifierError, match="SetStopClassifier"):
        StopClassifierStore(2).get("missing")
