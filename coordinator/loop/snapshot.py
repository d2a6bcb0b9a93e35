"""A request's state at the start of a round, frozen: everything the round's pure functions read.

``RequestFrame`` is what stays fixed while a request runs: its parameters and plan, both models, their
sequence ids and the vocabulary alignment. ``RoundSnapshot`` adds what one round starts from: the output
so far, the drafter's view of it (cross-vocabulary algorithms), whether the request still drafts, and the
round's index, which with the request seed derives every draw of the round (``coordinator.seeds``).

The runner takes a snapshot of its mutable ``RequestRun`` before each round and applies the round's result
to the run; a snapshot never changes, so speculative work can be forked from one.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.loop.plan import RequestPlan
from coordinator.pair import ModelEndpoint, VocabAlignment
from coordinator.request import AlgorithmName, GenerationParams
from coordinator.seeds import SeedPurpose, round_seed
from core.sampling import SamplingConfig


@dataclass(frozen=True)
class DrafterView:
    """The drafter's own tokens after its prompt in a cross-vocabulary run.

    After every commit they are re-synced to the committed text (``coordinator.vocab.resync_drafter``):
    ``canonical bytes(generated) + pending == committed_text``, where ``committed_text`` is the canonical
    bytes of the target's output tokens and ``pending`` the end of it the drafter cannot see yet (an
    incomplete character). Tokens that agree are kept, so the drafter service crops its cache to the
    longest common prefix instead of rebuilding it.
    """

    generated: tuple[int, ...] = ()
    pending: bytes = b""
    committed_text: bytes = b""


@dataclass(frozen=True, eq=False)
class RequestFrame:
    """What stays fixed while one request runs."""

    params: GenerationParams
    plan: RequestPlan
    target: ModelEndpoint
    drafter: ModelEndpoint | None
    alignment: VocabAlignment | None  # both vocabularies (cross-vocabulary algorithms)
    target_sequence_id: str
    drafter_sequence_id: str
    max_support: int  # the most proposal entries a Draft may ship per token (0: the drafter's default)
    slrs_enumeration_budget: int
    near_tie_logit_margin: float = 0.0  # greedy: a committed token decided under this top-2 margin


@dataclass(frozen=True)
class RoundSnapshot:
    """A request at the start of one round (the target sees its prompt ids followed by ``output``)."""

    frame: RequestFrame
    round_index: int
    output: tuple[int, ...]
    view: DrafterView | None  # cross-vocabulary algorithms only
    drafting: bool  # a speculative plan that has not fallen back to target-only decoding

    @property
    def algorithm(self) -> AlgorithmName:
        return self.frame.plan.algorithm

    @property
    def sampling(self) -> SamplingConfig:
        return self.frame.params.sampling

    @property
    def target_context(self) -> tuple[int, ...]:
        return (*self.frame.plan.target_prompt, *self.output)

    @property
    def drafter_context(self) -> tuple[int, ...]:
        """The drafter's prompt ids followed by the output (same vocabulary) or its own view of it."""
        prompt = self.frame.plan.drafter_prompt
        assert prompt is not None, "only a drafting plan has a drafter context"
        return (*prompt, *(self.output if self.view is None else self.view.generated))

    @property
    def remaining(self) -> int:
        """Output tokens the request may still commit."""
        return self.frame.params.max_new_tokens - len(self.output)

    @property
    def target_room(self) -> int:
        """Tokens the target's context window still holds."""
        return self.frame.target.max_context_tokens - len(self.frame.plan.target_prompt) - len(self.output)

    def seed(self, purpose: SeedPurpose) -> int:
        """The seed of one purpose's draws in this round."""
        return round_seed(self.frame.plan.seed, self.round_index, purpose)
