"""Lookahead policies: how many draft tokens to propose in the next round (0 = a target-only step).

A policy decides *before* a round, from earlier rounds only, so the choice never depends on the
randomness of the round it governs and verification stays lossless (ALGORITHMS.md §6). Pure Python:
no protobuf, gRPC or asyncio here; the loop passes domain types in.

Modules:

- ``policy``: the ``LookaheadPolicy`` protocol, the ``LookaheadDecision`` it makes before a round and
  the ``RoundObservation`` it learns from after one.
- ``static``: ``StaticLookahead`` (``static``), always k.
- ``confidence``: ``ConfidenceLookahead`` (``confidence``), up to k, and the drafter stops after a
  draft token whose probability is below a threshold.
- ``disco``: ``DiscoLookahead`` (``disco``), up to k, and the drafter stops where the pair's trained
  stop classifier says so (``StopClassifierRef``, named by every Draft of a request whose plan carries
  it; ``auto`` uses it too when the coordinator loaded one).
- ``auto``: ``CostModelLookahead`` (``auto``), the k in [0, k_max] with the best expected output
  tokens per second under the cost model; when no k > 0 beats a target-only step it decodes
  target-only and re-probes the drafter out of a probe budget.
- ``costs``: ``CostEstimates``, the deployment-wide cost model ``auto`` learns online from the
  services' own timings (per-width target costs, drafter step and catch-up costs, round overheads,
  per-regime acceptance and probe credit). One is shared by the requests of a coordinator (owned by
  the server, passed in; never a module global).
- ``lookup``: ``LookupChooser``, per round the lookup drafter's draft (a model-free drafter asked
  first) or the model drafter's round, by expected output tokens per second, with the lookup drafts'
  acceptance learned on its own.
- ``acceptance``: the two-stage acceptance model (``Acceptance``: the first draft token accepted at
  one rate, each further one at another given the ones before it were; one i.i.d. rate as in
  Leviathan et al., arXiv 2211.17192, is the special case of equal rates) and its decayed counts.

Adding a policy (as a trained stop-rule classifier will be):

1. a module here with a class that has the three methods of ``LookaheadPolicy`` (``decide``,
   ``observe``, ``describe``; the protocol is structural, there is no base class to inherit), taking
   any deployment-wide state as a constructor argument, as ``auto`` takes ``CostEstimates``;
2. its export below;
3. its ``LookaheadKind`` (``coordinator.request``) mapped to it where the loop builds a request's
   policy (``coordinator.loop.plan.make_lookahead``);
4. its tests in tests/unit/lookahead/, against the simulated deployment there.

A new way for the drafter to end a draft early is a field of ``LookaheadDecision``, next to
``confidence_threshold``, that the round passes on to the drafter; any policy, ``auto`` included, may
then set it.
"""

from coordinator.lookahead.acceptance import Acceptance, AcceptanceCounts, expected_output_tokens
from coordinator.lookahead.auto import CostModelLookahead
from coordinator.lookahead.confidence import ConfidenceLookahead
from coordinator.lookahead.costs import CostEstimates, VerifyCostTable
from coordinator.lookahead.disco import DiscoLookahead, StopClassifierRef
from coordinator.lookahead.lookup import LookupChooser
from coordinator.lookahead.policy import LookaheadDecision, LookaheadPolicy, RoundObservation
from coordinator.lookahead.static import StaticLookahead

__all__ = [
    "Acceptance",
    "AcceptanceCounts",
    "ConfidenceLookahead",
    "CostEstimates",
    "CostModelLookahead",
    "DiscoLookahead",
    "LookaheadDecision",
    "LookaheadPolicy",
    "LookupChooser",
    "RoundObservation",
    "StaticLookahead",
    "StopClassifierRef",
    "VerifyCostTable",
    "expected_output_tokens",
]
