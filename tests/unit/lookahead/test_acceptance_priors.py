"""The two acceptance priors: a fixed rate in the deployment's estimate, that estimate in a request's."""

from __future__ import annotations

import pytest

from coordinator.lookahead import CostEstimates, CostModelLookahead, RoundObservation


def _round(drafted: int, accepted: int) -> RoundObservation:
    return RoundObservation(
        drafted=drafted,
        accepted=accepted,
        draft_seconds=0.1 * drafted,
        draft_forwards=drafted,
        draft_computed_tokens=drafted + 1,
        verify_seconds=0.5,
        verify_tokens=drafted + 1,
        round_seconds=0.1 * drafted + 0.51,
    )


def test_prior_acceptance_trials_weigh_the_fixed_prior_in_the_shared_estimate() -> None:
    light, heavy = CostEstimates(prior_acceptance_trials=1.0), CostEstimates(prior_acceptance_trials=99.0)
    for estimates in (light, heavy):
        estimates.observe(_round(4, 0), regime="r")  # one failed round
    light_rate, heavy_rate = light.acceptance("r"), heavy.acceptance("r")
    assert light_rate is not None and heavy_rate is not None
    assert light_rate.first == pytest.approx(0.6 / 2)  # (0 + 0.6 * 1) / (1 + 1)
    assert heavy_rate.first == pytest.approx(0.6 * 99 / 100)


def test_shared_acceptance_trials_weigh_the_shared_estimate_in_a_request() -> None:
    shared = CostEstimates(prior_acceptance_trials=0.0)
    for _ in range(20):
        shared.observe(_round(4, 4), regime="r")  # the deployment's drafter is always right
    trusting = CostModelLookahead(shared, k_max=4, regime="r", shared_acceptance_trials=1000.0)
    own = CostModelLookahead(shared, k_max=4, regime="r", shared_acceptance_trials=0.01)
    for policy in (trusting, own):
        policy.observe(_round(4, 0))  # but this request's draft failed
    deployment = shared.acceptance("r")  # it counts the failed rounds too
    assert deployment is not None and deployment.first > 0.85
    assert trusting._acceptance().first == pytest.approx(deployment.first, abs=0.01)
    assert own._acceptance().first < 0.01
