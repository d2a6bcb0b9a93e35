"""The lookup engine: Draft by prompt lookup or suffix-tree drafting over the target's own token ids.

It presents the target's identity (``target_info``: tokenizer, logit width, stop tokens, context limit,
read from the target's model folder), keeps one session per sequence (``services.lookup.sessions``) and
answers Draft with point-mass proposals: each draft token ships as ``{token: 1.0}``, since the draft is
a deterministic function of the context (and, with cross-request memory, of earlier outputs). No match
means no draft tokens; the coordinator's round is then a plain target step. Score is not served.

A draft ends at ``max_draft_tokens``, after a stop token (kept, as the model drafter keeps it), where the
lookup runs out, and before the first token outside a registered token mask. A suffix draft also stops
before its running frequency score falls under ``max(suffix_min_score, confidence_threshold)``.

Cross-request memory (suffix, opt-in): when a sequence ends (released, idle past the TTL, or evicted),
the tokens its context gained after its first Draft (its generated text, as this drafter saw it; not
the prompt) are kept in a bounded first-in-first-out store over the last ``cross_request_memory_tokens``
tokens, in this process's memory only (per replica, gone on restart), and later drafts of any sequence
may propose from them. Drafts never change the output law, but a deployment shared by parties who must
not learn about each other's outputs should leave it off: acceptance and timing can tell that a
continuation was generated before.

Draft and Score run on the worker thread (``services.model.worker``); ``release``, ``expire_idle`` and
``set_token_mask`` are thread-safe housekeeping. Ended sessions reach the memory through a queue drained
by the worker thread, so the shared tree is only ever changed there.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from core.cancel import CancelSignal
from core.checksum import whole_context
from core.errors import CallNotServedError, InvalidArgumentError
from core.lookup import NgramIndex, OutputMemory, SuffixIndex, suffix_draft
from core.modelcalls import (
    DraftCall,
    DraftOutcome,
    EngineInfo,
    ForwardStats,
    ScoreCall,
    ScoreOutcome,
    SparseProbs,
)
from services.lookup.sessions import ContextIndex, LookupSession, LookupSessions
from services.lookup.settings import LookupServiceSettings
from services.model.classifiers import RegisteredClassifier
from services.model.identity import (
    eos_token_ids,
    find_fim_tokens,
    max_context_tokens,
    tokenizer_files,
    tokenizer_fingerprint,
)
from services.model.masks import RegisteredMask, TokenMaskStore

MASK_DEVICE = torch.device("cpu")


def target_info(settings: LookupServiceSettings) -> EngineInfo:
    """The drafter's Info: the target's tokenizer and limits, this drafter's name, kind and draft limit."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    folder = str(settings.target_model_dir)
    config: Any = AutoConfig.from_pretrained(folder, local_files_only=True)
    try:
        generation: Any = GenerationConfig.from_pretrained(folder, local_files_only=True)
    except OSError:  # no generation_config.json
        generation = GenerationConfig.from_model_config(config)
    tokenizer: Any = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    vocab_size = int(config.get_text_config().vocab_size)
    return EngineInfo(
        model_name=settings.model_name,
        model_type=settings.kind,
        vocab_size=vocab_size,
        max_context_tokens=max_context_tokens(config),
        eos_token_ids=eos_token_ids(config, generation, vocab_size, tokenizer),
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
        tokenizer_files=tokenizer_files(tokenizer),
        fim=find_fim_tokens(tokenizer.get_vocab()),
        dtype="none",
        device="cpu",
        emulated_forward_seconds=0.0,
        max_draft_tokens=settings.max_draft_tokens,
        max_queue=settings.max_queue,
    )


class LookupEngine:
    """Draft over per-sequence lookup indexes; Score refused; sessions, masks and memory kept here."""

    def __init__(
        self,
        settings: LookupServiceSettings,
        info: EngineInfo,
        *,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.info = info
        self._settings = settings
        self._timer = timer
        self.memory: OutputMemory | None = None
        if settings.cross_request_memory_tokens:
            self.memory = OutputMemory(settings.cross_request_memory_tokens, settings.suffix_depth)
        self._ended: deque[list[int]] = deque()  # generated text of ended sessions, for the memory
        self.sessions = LookupSessions(
            budget_tokens=settings.cache_budget_tokens,
            ttl_seconds=settings.cache_ttl_seconds,
            new_index=self._new_index,
            on_end=self._on_end,
            clock=clock,
        )
        self.token_masks = TokenMaskStore(settings.max_token_masks, info.vocab_size, MASK_DEVICE)
        self.forwards_served = 0  # no model: no forwards, nothing emulated
        self.emulated_overruns = 0

    @classmethod
    def load(cls, settings: LookupServiceSettings) -> LookupEngine:
        """Reads the target's identity from its folder and builds an engine around it."""
        if not Path(settings.target_model_dir).is_dir():
            raise FileNotFoundError(f"target model folder {settings.target_model_dir} is not a folder")
        return cls(settings, target_info(settings))

    def _new_index(self) -> ContextIndex:
        if self._settings.kind == "ngram":
            return NgramIndex(self._settings.ngram_min, self._settings.ngram_max)
        return SuffixIndex(self._settings.suffix_depth)

    def _on_end(self, session: LookupSession, reason: str) -> None:
        del reason
        if self.memory is not None:
            self._ended.append(session.generated)

    def set_token_mask(self, mask_id: str, bitmap: bytes) -> RegisteredMask:
        """Registers (or replaces) a token mask for later Draft calls; thread-safe."""
        return self.token_masks.register(mask_id, bitmap)

    def set_stop_classifier(self, classifier_id: str, spec_json: str, weights: bytes) -> RegisteredClassifier:
        """Refused: a lookup draft is a stored continuation, not a distribution to judge token by token."""
        raise CallNotServedError("a model-free drafter takes no stop classifier")

    def release(self, sequence_ids: Iterable[str]) -> int:
        """Ends the named sequences; returns how many were held. Thread-safe."""
        return self.sessions.release(sequence_ids)

    def expire_idle(self) -> int:
        """Ends sequences idle for longer than the TTL. Thread-safe."""
        return self.sessions.expire_idle()

    def score(self, call: ScoreCall, cancel: CancelSignal | None = None) -> ScoreOutcome:
        """Refused: a lookup drafter has no model to score with."""
        raise CallNotServedError(
            f"this is a model-free drafter ({self._settings.kind}): it serves Draft only, not Score; "
            "the target must be a model service (polyspec serve model)"
        )

    def draft(self, call: DraftCall, cancel: CancelSignal | None = None) -> DraftOutcome:
        """Up to ``call.max_draft_tokens`` looked-up draft tokens, each a point mass; the sequence then
        holds context + draft tokens. An unknown mask raises before the sequence is touched. One lookup,
        no forwards: nothing to stop part-way, so ``cancel`` is not consulted."""
        mask = self.token_masks.get(call.token_mask_id) if call.token_mask_id else None
        started = self._timer()
        self.sessions.expire_idle()
        self._remember_ended()
        ref = call.context
        held = self.sessions.held_tokens(ref.sequence_id) if ref.cached_prefix_len else None
        context = whole_context(
            ref.sequence_id, ref.cached_prefix_len, ref.cached_prefix_checksum, ref.tokens, held
        )
        limit = self.info.max_context_tokens
        if len(context) >= limit:
            raise InvalidArgumentError(
                "context", f"{len(context)} tokens leave no room for draft tokens (limit {limit})"
            )
        session, reused = self.sessions.prepare(ref.sequence_id, context)
        count = min(call.max_draft_tokens, limit - len(context))
        tokens = self._within_mask(self._propose(session, count, call), mask)
        self.sessions.commit(session, context + list(tokens))
        stats = ForwardStats(
            computed_tokens=len(context) - reused,
            reused_tokens=reused,
            compute_seconds=self._timer() - started,
        )
        probs = tuple(SparseProbs((token,), (1.0,)) for token in tokens)
        return DraftOutcome(tokens, probs, stats)

    def _propose(self, session: LookupSession, count: int, call: DraftCall) -> tuple[int, ...]:
        index = session.index
        if isinstance(index, NgramIndex):
            return index.propose(count, call.stop_token_ids)
        assert isinstance(index, SuffixIndex)
        trees = [index.tree] if self.memory is None else [index.tree, self.memory.tree]
        return suffix_draft(
            trees,
            index.tokens,
            count,
            stop_token_ids=call.stop_token_ids,
            min_match=self._settings.suffix_min_match,
            min_score=max(self._settings.suffix_min_score, call.confidence_threshold),
        ).tokens

    @staticmethod
    def _within_mask(tokens: tuple[int, ...], mask: torch.Tensor | None) -> tuple[int, ...]:
        """The draft up to its first token outside the mask (all of it without a mask)."""
        if mask is None:
            return tokens
        for position, token in enumerate(tokens):
            if not bool(mask[token]):
                return tokens[:position]
        return tokens

    def _remember_ended(self) -> None:
        """Moves the generated text of ended sessions into the memory (worker thread only)."""
        while self._ended:
            generated = self._ended.popleft()
            if self.memory is not None and generated:
                self.memory.add(generated)
