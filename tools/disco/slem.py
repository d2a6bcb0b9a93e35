"""SLEM collection: DISCO labels for a drafter and a target with different tokenizers (greedy only).

Every round is the coordinator's SLEM round, run by its pure functions (``coordinator.loop.round``) on a
request frame built as the coordinator builds one (``align_pair``, the prompt encoded by each model's
tokenizer): the drafter drafts the full k tokens in its own vocabulary after its own view of the
committed text (``return_features``, no stop rule but its end of sequence), the drafted text is
re-tokenized into target candidates after the committed target tokens, the target verifies them by exact
match, the accepted candidates and the target's next token are committed, and the drafter's view is
re-synced to the committed text (``next_view``). The output is therefore the target's greedy output.

Labels, in drafter tokens: draft token j is 1 while the text drafted up to it lies inside the target
tokens the round accepted (``coordinator.loop.translate.slem_covered_drafts``), then 0; ``accepted`` is
the number of leading 1s. A stop rule ending the draft after d tokens would verify the candidates of that
shorter text, so each round also records how many target tokens it would commit for every d
(``CollectedRound.committed``): they come from the target's greedy path the round already revealed, and
from one more Score call only where a shorter draft's candidates reach beyond it. Sampled SLEM labels
are not defined here: ``collect_slem`` refuses a sampling temperature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from coordinator.loop.plan import RequestPlan
from coordinator.loop.round import (
    Committed,
    Verified,
    candidates,
    commit,
    decide,
    draft_budget,
    draft_call,
    next_view,
    score_call,
)
from coordinator.loop.snapshot import DrafterView, RequestFrame, RoundSnapshot
from coordinator.loop.translate import EMPTY, Candidates, slem_covered_drafts
from coordinator.pair import ModelPair, align_pair, endpoint_from_info
from coordinator.prompting import encode_prompt, encode_target_prompt
from coordinator.request import AlgorithmName, GenerationParams, LookaheadKind, LookaheadRequest, TextInput
from core.disco.training import CollectedRound
from core.modelcalls import DraftCall, DraftOutcome, EngineInfo, ScoreOutcome
from tools.disco.collect import Collection, CollectSettings, DraftScore

# Output tokens the request frame allows beyond ``max_new_tokens``, so that a round's candidates are
# never cut by the end of the output (collection truncates the output itself).
HEADROOM_TOKENS = 1 << 20


def aligned_pair(drafter: EngineInfo, target: EngineInfo) -> ModelPair:
    """The pair aligned as the coordinator aligns it at start-up (blocking: seconds for real tokenizers)."""
    return align_pair(
        endpoint_from_info("target", "in-process", target),
        endpoint_from_info("drafter", "in-process", drafter),
    )


def slem_pair(drafter: EngineInfo, target: EngineInfo) -> ModelPair:
    """The aligned pair; ``ValueError`` unless SLEM can run on it."""
    pair = aligned_pair(drafter, target)
    if pair.same_tokenizer:
        raise ValueError("the drafter and the target share one vocabulary: collect greedy labels instead")
    if not pair.cross_vocabulary:
        raise ValueError(
            f"the drafter's and the target's vocabularies cannot be aligned: {pair.alignment_error}"
        )
    return pair


def slem_frame(pair: ModelPair, index: int, text: str, settings: CollectSettings) -> RequestFrame:
    """A greedy SLEM request for prompt ``text``, each model's prompt encoded by its own tokenizer."""
    assert pair.drafter is not None and pair.alignment is not None
    params = GenerationParams(
        input=TextInput(text),
        max_new_tokens=settings.max_new_tokens + HEADROOM_TOKENS,
        sampling=settings.sampling,
        seed=settings.seed,
        algorithm=AlgorithmName.SLEM,
        lookahead=LookaheadRequest(LookaheadKind.STATIC, settings.k, None),
        ignore_eos=False,
        request_id=f"disco-{index}",
    )
    drafter_prompt = tuple(encode_prompt(pair.drafter, params.input))
    if not drafter_prompt:
        raise ValueError(f"prompt {index} encodes to no drafter tokens")
    target_prompt = tuple(encode_target_prompt(pair.target, params.input))
    plan = RequestPlan(AlgorithmName.SLEM, None, settings.seed, target_prompt, drafter_prompt, "")
    return RequestFrame(
        params=params,
        plan=plan,
        target=pair.target,
        drafter=pair.drafter,
        alignment=pair.alignment,
        target_sequence_id=f"disco/{index}/target",
        drafter_sequence_id=f"disco/{index}/drafter",
        max_support=0,  # the drafter's default
        slrs_enumeration_budget=0,
    )


def collect_slem(
    drafter: DraftScore,
    target: DraftScore,
    pair: ModelPair,
    prompts: Sequence[tuple[int, str]],  # (prompt index, prompt text)
    *,
    settings: CollectSettings,
    progress: Callable[[int], None] = lambda tokens: None,
) -> Collection:
    """Runs every prompt to ``max_new_tokens`` (or the target's end of sequence); see the module docstring."""
    if not settings.sampling.is_greedy:
        raise ValueError(
            "SLEM labels (a drafter and a target with different tokenizers) are collected greedily: "
            "use temperature 0"
        )
    collection = Collection([])
    for index, text in prompts:
        snapshot = RoundSnapshot(slem_frame(pair, index, text, settings), 0, (), DrafterView(), True)
        while len(snapshot.output) < settings.max_new_tokens:
            committed, view = _round(drafter, target, index, snapshot, k=settings.k, collection=collection)
            progress(len(committed.tokens))
            output = (*snapshot.output, *committed.tokens)
            snapshot = RoundSnapshot(snapshot.frame, snapshot.round_index + 1, output, view, True)
            if committed.finish is not None:
                break
        collection.outputs[index] = list(snapshot.output[: settings.max_new_tokens])
    return collection


def _round(
    drafter: DraftScore,
    target: DraftScore,
    index: int,
    snapshot: RoundSnapshot,
    *,
    k: int,
    collection: Collection,
) -> tuple[Committed, DrafterView | None]:
    """One full-length SLEM round (a plain target step when the drafter has no room): records it and
    returns what it commits and the drafter's view after it."""
    k = min(k, draft_budget(snapshot))
    if k <= 0:
        scored = target.score(score_call(snapshot, EMPTY))
        committed = commit(snapshot, decide(snapshot, EMPTY, scored))
        return committed, next_view(snapshot, None, committed.tokens)
    call = replace(draft_call(snapshot, k, 0.0), return_features=True)
    drafted = drafter.draft(call)
    proposed = candidates(snapshot, call, drafted)
    scored = target.score(score_call(snapshot, proposed))
    verified = decide(snapshot, proposed, scored)
    committed = commit(snapshot, verified)
    if snapshot.round_index > 0:  # the first round prefills the prompt (``Collection.time_round``)
        collection.time_round(drafted.stats, scored.stats)
    if drafted.draft_tokens:
        verdict = _Verdict(call, drafted, proposed, scored, verified)
        collection.rounds.append(_collected(target, index, snapshot, verdict))
    return committed, next_view(snapshot, drafted, committed.tokens)


@dataclass(frozen=True)
class _Verdict:
    """A round's draft and what the target made of it."""

    call: DraftCall
    drafted: DraftOutcome
    proposed: Candidates
    scored: ScoreOutcome
    verified: Verified


def _collected(target: DraftScore, index: int, snapshot: RoundSnapshot, verdict: _Verdict) -> CollectedRound:
    """The round's features, labels (drafter tokens covered by accepted target tokens) and commits."""
    alignment, view = snapshot.frame.alignment, snapshot.view
    assert alignment is not None and view is not None
    drafted, verified = verdict.drafted, verdict.verified
    accepted = slem_covered_drafts(
        alignment.drafter,
        alignment.target,
        drafted.draft_tokens,
        pending=view.pending,
        accepted_candidates=verdict.proposed.tokens[: verified.accepted],
    )
    count = len(drafted.draft_tokens)
    labels = (1.0,) * accepted + (0.0,) * (count - accepted)
    known = verdict.scored.target_samples[: verified.accepted + 1]  # the target's greedy path so far
    committed = tuple(
        commits_after(target, snapshot, verdict.call, _first(drafted, d), known) for d in range(1, count + 1)
    )
    return CollectedRound(index, drafted.features, labels, accepted, committed)


def _first(drafted: DraftOutcome, count: int) -> DraftOutcome:
    """The draft as if it had stopped after ``count`` tokens."""
    return DraftOutcome(drafted.draft_tokens[:count], drafted.draft_probs[:count], drafted.stats, ())


def commits_after(
    target: DraftScore,
    snapshot: RoundSnapshot,
    call: DraftCall,
    drafted: DraftOutcome,
    known: Sequence[int],
) -> int:
    """Target tokens the round commits for a draft of these tokens: its candidates matched against the
    target's greedy path ``known`` so far, or scored by the target where they reach beyond it."""
    proposed = candidates(snapshot, call, drafted)
    matched = 0
    for token, greedy in zip(proposed.tokens, known, strict=False):
        if token != greedy:
            break
        matched += 1
    if matched < len(known):
        verified = Verified((*proposed.tokens[:matched], known[matched]), matched)
    else:
        verified = decide(snapshot, proposed, target.score(score_call(snapshot, proposed)))
    return len(commit(snapshot, verified).tokens)
