"""The output law does not depend on DISCO's stop rule (1e5 trials per case, ``tests.support.population``).

The drafter applies a stop rule over each draft token's features (``core.disco``), keeping the token it
stops after, as a registered classifier does in the model service. Cases: a classifier that stops after
unsure tokens, a random MLP, and an adversary that stops exactly after the tokens the target may reject
(draft_prob > target_prob at that token, read back from the token's features); greedy decoding with each
rule is the target's argmax decoding.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import Tensor

from core.disco.classifier import StopRule
from core.disco.features import token_features
from core.sampling import SamplingConfig, warp_probs
from tests.support.laws import greedy_output, reference_warp
from tests.support.population import PopulationRun, run_requests
from tests.support.toy_lm import TableLM
from tests.support.toy_service import DirectCalls, ToyModel, bare_info
from tests.unit.disco.helpers import random_mlp, token_prob_classifier
from tests.unit.verify.test_verify_distribution import (
    EOS,
    OUTPUT_TOKENS,
    PROMPT,
    VOCAB,
    run_law,
    sd_case,
    toy_pair,
)


def rejecting_rule(target: TableLM, drafter: TableLM, config: SamplingConfig) -> StopRule:
    """Stops after a draft token the target may reject: its features name the token (by its probability
    under the drafter's state), and the rule looks up whether target_prob < draft_prob there."""
    verdicts: dict[float, bool] = {}
    rows = drafter.table.reshape(-1, VOCAB)
    target_rows = target.table.reshape(-1, VOCAB)
    draft_probs = warp_probs(rows, config)
    for row in range(rows.shape[0]):
        features = token_features(draft_probs[row].expand(VOCAB, VOCAB), torch.arange(VOCAB), 0)
        target_probs = reference_warp(target_rows[row].tolist(), config)
        for token in range(VOCAB):
            key = float(features[token, 0])
            rejectable = target_probs[token] < float(draft_probs[row, token])
            verdicts[key] = verdicts.get(key, False) or rejectable

    def stops(features: Tensor) -> Tensor:
        return torch.tensor([verdicts.get(float(v), False) for v in features[:, 0]], dtype=torch.bool)

    return stops


def test_a_classifier_stop_keeps_the_law() -> None:
    case = replace(
        sd_case(*toy_pair(), SamplingConfig(1.0), k=3), stop_rule=token_prob_classifier().stop_rule()
    )
    population = run_law(case, seed=21)
    assert population.counts.short_drafts > 0.2 * population.counts.rounds


def test_a_random_mlp_stop_keeps_the_law_under_warpers() -> None:
    case = sd_case(*toy_pair(), SamplingConfig(0.8, top_k=4), k=4)
    population = run_law(replace(case, stop_rule=random_mlp(5).stop_rule()), seed=22)
    assert population.counts.short_drafts > 0


def test_stopping_exactly_on_rejectable_tokens_keeps_the_law() -> None:
    target, drafter = toy_pair()
    config = SamplingConfig(1.0)
    case = replace(sd_case(target, drafter, config, k=3), stop_rule=rejecting_rule(target, drafter, config))
    population = run_law(case, seed=23)
    assert population.counts.short_drafts > 0.2 * population.counts.rounds


@pytest.mark.parametrize("rule", ["classifier", "mlp", "rejecting"])
def test_greedy_output_is_the_targets_argmax_with_each_rule(rule: str) -> None:
    target, drafter = toy_pair()
    config = SamplingConfig(0.0)
    stop = {
        "classifier": token_prob_classifier().stop_rule(),
        "mlp": random_mlp(6).stop_rule(),
        "rejecting": rejecting_rule(target, drafter, SamplingConfig(1.0)),
    }[rule]
    case = replace(sd_case(target, drafter, config, k=4, eos=(EOS,)), stop_rule=stop)
    expected = greedy_output(target, OUTPUT_TOKENS, prompt=PROMPT, eos=(EOS,))
    assert set(PopulationRun(case).run(500, seed=5).outputs) == {expected}
    calls = DirectCalls(ToyModel(target, bare_info(VOCAB)), ToyModel(drafter, bare_info(VOCAB)))
    assert run_requests(case, calls, range(3)) == [expected] * 3
