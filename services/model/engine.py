"""The model engine: a transformers causal LM with per-sequence KV caches serving Draft and Score.

Methods are synchronous and run on the model worker thread (see ``services.model.worker``), except
the housekeeping ones, which are thread-safe and need no worker turn: ``set_token_mask``, ``release``
and ``expire_idle``. Forwards feed only the tokens not already cached; the sampling math is
``core.sampling``, and Draft runs the drafter's loop and stop rule of ``core.drafting`` (restricted to a
token mask with ``core.restrict``, see ``services.model.masks``).

A call given a ``core.cancel.CancelSignal`` stops once it is set: before its next forward, or at once
while it sits in an emulated-latency pad; the forwards it did stay cached (the cache then holds what was
fed), so a pre-empted call costs its caller no re-prefill. A forward whose real compute exceeds the
emulated latency is an overrun (``ForwardStats.emulated_overruns``, the engine's running totals).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Cache, DynamicCache

from core.cancel import CallCancelledError, CancelSignal
from core.checksum import whole_context
from core.drafting import DraftRule, Drafts, draft_rows
from core.errors import InvalidArgumentError
from core.modelcalls import (
    ContextRef,
    DraftCall,
    DraftOutcome,
    EngineInfo,
    ForwardStats,
    ScoreCall,
    ScoreOutcome,
    SparseProbs,
)
from core.sampling import score_candidates, sparse_to_dense, top2_logit_margins
from services.model.cache import CacheSession, EvictionReason, KvCacheManager, kv_nbytes
from services.model.classifiers import RegisteredClassifier, StopClassifierStore
from services.model.identity import (
    dtype_name,
    eos_token_ids,
    find_fim_tokens,
    max_context_tokens,
    model_fingerprint,
    tokenizer_files,
    tokenizer_fingerprint,
)
from services.model.kernels import apply_linear_kernel
from services.model.masks import RegisteredMask, TokenMaskStore
from services.model.quantize import quantize_linears
from services.model.settings import ModelServiceSettings

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Where the sampling math runs: ``_forward`` moves the logits there, and token masks live there.
SAMPLING_DEVICE = torch.device("cpu")


@dataclass(frozen=True)
class EngineClocks:
    """Time sources, injectable for tests: ``clock`` for cache idleness, ``timer``/``sleep`` for forwards."""

    clock: Callable[[], float] = time.monotonic
    timer: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep


def load_model(settings: ModelServiceSettings) -> tuple[Any, Any]:
    """Loads the model (eval mode, on its device) and its tokenizer from the local folder."""
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(settings.model_dir), dtype=_DTYPES[settings.dtype], local_files_only=True
    )
    model.to(torch.device(settings.device))
    model.eval()
    model = quantize_linears(model, settings.quantize)
    apply_linear_kernel(model, settings.linear_kernel, device=settings.device, dtype=_DTYPES[settings.dtype])
    tokenizer = AutoTokenizer.from_pretrained(str(settings.model_dir), local_files_only=True)
    return model, tokenizer


class ModelEngine:
    """One loaded model, its KV cache manager and the Draft / Score / Release operations."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        settings: ModelServiceSettings,
        *,
        clocks: EngineClocks | None = None,
        on_evict: Callable[[str, EvictionReason], None] | None = None,
    ) -> None:
        self.model = model
        self._settings = settings
        self._clocks = clocks or EngineClocks()
        self._device = torch.device(settings.device)
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._vocab_size, bytes_per_token = self._probe()
        self.info = self._build_info(tokenizer)
        self.cache = KvCacheManager(
            budget_bytes=settings.cache_budget_bytes,
            ttl_seconds=settings.cache_ttl_seconds,
            bytes_per_token=bytes_per_token,
            new_cache=self._new_cache,
            clock=self._clocks.clock,
            on_evict=on_evict,
        )
        self.token_masks = TokenMaskStore(settings.max_token_masks, self._vocab_size, SAMPLING_DEVICE)
        self.stop_classifiers = StopClassifierStore(settings.max_token_masks)
        self.forwards_served = 0  # running totals (written on the worker thread only)
        self.emulated_overruns = 0

    @classmethod
    def load(
        cls,
        settings: ModelServiceSettings,
        *,
        clocks: EngineClocks | None = None,
        on_evict: Callable[[str, EvictionReason], None] | None = None,
    ) -> ModelEngine:
        """Loads the model named by the settings and builds an engine around it."""
        model, tokenizer = load_model(settings)
        return cls(model, tokenizer, settings, clocks=clocks, on_evict=on_evict)

    def _build_info(self, tokenizer: Any) -> EngineInfo:
        config = self.model.config
        parameter = next(self.model.parameters())
        return EngineInfo(
            model_name=self._settings.model_name,
            model_type=str(config.model_type),
            vocab_size=self._vocab_size,
            max_context_tokens=max_context_tokens(config),
            eos_token_ids=eos_token_ids(config, self.model.generation_config, self._vocab_size, tokenizer),
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
            tokenizer_files=tokenizer_files(tokenizer),
            fim=find_fim_tokens(tokenizer.get_vocab()),
            dtype=self._precision(parameter),
            device=str(parameter.device),
            emulated_forward_seconds=self._settings.emulated_forward_seconds,
            max_draft_tokens=self._settings.max_draft_tokens,
            max_queue=self._settings.max_queue,
            model_fingerprint=model_fingerprint(self.model),
        )

    def _precision(self, parameter: torch.Tensor) -> str:
        """Info's dtype: the weights' dtype, plus the quantization of the linear layers if any."""
        dtype = dtype_name(parameter.dtype)
        quantize = self._settings.quantize
        return dtype if quantize == "none" else f"{dtype}+{quantize}"

    def _new_cache(self) -> Cache:
        kv: Any = DynamicCache(config=self.model.config)
        kv.activate_past_recording()  # sliding-window layers keep what a later crop needs
        cache: Cache = kv
        return cache

    def _probe(self) -> tuple[int, int]:
        """One single-token forward: the logits width and the KV bytes one token takes."""
        kv = self._new_cache()
        input_ids = torch.zeros((1, 1), dtype=torch.long, device=self._device)
        with torch.inference_mode():
            output = self.model(input_ids=input_ids, cache=kv, use_cache=True)
        return int(output.logits.shape[-1]), max(kv_nbytes(kv), 1)

    def set_token_mask(self, mask_id: str, bitmap: bytes) -> RegisteredMask:
        """Registers (or replaces) a token mask for later Draft calls; thread-safe, needs no worker turn."""
        return self.token_masks.register(mask_id, bitmap)

    def set_stop_classifier(self, classifier_id: str, spec_json: str, weights: bytes) -> RegisteredClassifier:
        """Registers (or replaces) a stop classifier for later Draft calls; thread-safe, no worker turn."""
        return self.stop_classifiers.register(classifier_id, spec_json, weights)

    def release(self, sequence_ids: Iterable[str]) -> int:
        """Drops the caches of the named sequences; returns how many were held. Thread-safe."""
        return self.cache.release(sequence_ids)

    def expire_idle(self) -> int:
        """Drops caches idle for longer than the TTL. Thread-safe."""
        return self.cache.expire_idle()

    def resolve_context(self, context: ContextRef) -> list[int]:
        """The whole context a request names: a checked prefix of the held tokens plus its tokens."""
        held = self.cache.held_tokens(context.sequence_id) if context.cached_prefix_len > 0 else None
        return whole_context(
            context.sequence_id,
            context.cached_prefix_len,
            context.cached_prefix_checksum,
            context.tokens,
            held,
        )

    def draft(self, call: DraftCall, cancel: CancelSignal | None = None) -> DraftOutcome:
        """Samples up to ``call.max_draft_tokens`` draft tokens; the cache then holds context + drafts.

        With ``call.token_mask_id`` every draft token lies in that mask (``services.model.masks``); a mask
        with no allowed id yields no draft tokens. An unknown mask raises ``UnknownTokenMaskError`` before
        the sequence's cache is touched.
        """
        mask = self.token_masks.get(call.token_mask_id) if call.token_mask_id else None
        rule = self._draft_rule(call)
        with torch.inference_mode():
            self.cache.expire_idle()
            context = self.resolve_context(call.context)
            limit = self.info.max_context_tokens
            if len(context) >= limit:
                raise InvalidArgumentError(
                    "context", f"{len(context)} tokens leave no room for draft tokens (limit {limit})"
                )
            count = min(call.max_draft_tokens, limit - len(context))
            stats = ForwardStats(emulated_latency=self._settings.emulated_forward_seconds > 0)
            prepared = self.cache.prepare(
                call.context.sequence_id,
                context,
                max_reuse=len(context) - 1,
                final_tokens=len(context) + count - 1,
            )
            stats.reused_tokens = prepared.reused_tokens
            session = prepared.session
            fed = list(context)  # context, then each draft token as it is fed
            with self._kept_if_cancelled(session, fed):
                drafts = self._draft_loop(
                    session,
                    prepared.feed_tokens,
                    call,
                    replace(rule, count=count),
                    stats,
                    mask=mask,
                    cancel=cancel,
                    fed=fed,
                )
                draft_tokens, draft_probs = drafts.row(0)
                # Fed: all but the last draft token, or every one when drafting ran out of mask mass.
                self.cache.commit(session, context + list(draft_tokens), kv_len=session.kv_len)
        features = drafts.row_features(0) if call.return_features else ()
        return DraftOutcome(draft_tokens, draft_probs, stats, features)

    def _draft_rule(self, call: DraftCall) -> DraftRule:
        """The call's stop rule (count set later); an unknown classifier raises before any work."""
        classifier = None
        if call.stop_classifier_id:
            held = self.stop_classifiers.get(call.stop_classifier_id)
            classifier = held.stop_rule(call.stop_classifier_threshold)
        return DraftRule(
            call.max_draft_tokens,
            call.stop_token_ids,
            call.confidence_threshold,
            stop_classifier=classifier,
            keep_features=call.return_features,
        )

    def _draft_loop(
        self,
        session: CacheSession,
        feed_tokens: list[int],
        call: DraftCall,
        rule: DraftRule,
        stats: ForwardStats,
        *,
        mask: torch.Tensor | None,  # [vocab] bool on SAMPLING_DEVICE
        cancel: CancelSignal | None,
        fed: list[int],
    ) -> Drafts:
        """One row of ``core.drafting.draft_rows``: a forward per draft token but the last.

        ``fed`` gets each draft token as it is fed (what the cache holds if the call is cancelled).
        """
        generator = torch.Generator(device=SAMPLING_DEVICE).manual_seed(call.seed)
        first = self._forward(session, feed_tokens, 1, stats, cancel)  # [1, vocab]

        def advance(rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:  # [1, vocab]
            fed.append(int(tokens[0]))
            return self._forward(session, [int(tokens[0])], 1, stats, cancel)

        support = call.max_support or self._settings.default_max_support
        return draft_rows(
            first, advance, rule, config=call.sampling, max_support=support, generator=generator, mask=mask
        )

    def score(self, call: ScoreCall, cancel: CancelSignal | None = None) -> ScoreOutcome:
        """One forward over context + candidates; target samples, candidate probs and recovered tokens."""
        with torch.inference_mode():
            self.cache.expire_idle()
            context = self.resolve_context(call.context)
            candidates = list(call.candidate_tokens)
            self._check_score_length(len(context), len(candidates))
            stats = ForwardStats(emulated_latency=self._settings.emulated_forward_seconds > 0)
            tokens = context + candidates
            prepared = self.cache.prepare(
                call.context.sequence_id, tokens, max_reuse=len(context) - 1, final_tokens=len(tokens)
            )
            stats.reused_tokens = prepared.reused_tokens
            session = prepared.session
            with self._kept_if_cancelled(session, tokens):
                logits = self._forward(session, prepared.feed_tokens, len(candidates) + 1, stats, cancel)
                self.cache.commit(session, tokens, kv_len=len(tokens))
            result = score_candidates(
                logits,
                torch.tensor(candidates, dtype=torch.int64),
                self._dense_draft_probs(call.draft_probs),
                call.sampling,
                torch.Generator(device=SAMPLING_DEVICE).manual_seed(call.seed),
            )
            greedy = call.sampling.is_greedy
            margins = tuple(top2_logit_margins(logits).tolist()) if greedy else ()
        recovered = result.recovered_tokens
        return ScoreOutcome(
            candidate_target_probs=() if greedy else tuple(result.candidate_target_probs.tolist()),
            target_samples=tuple(int(t) for t in result.target_samples.tolist()),
            recovered_tokens=() if recovered is None else tuple(int(t) for t in recovered.tolist()),
            stats=stats,
            top2_logit_margins=margins,
        )

    def _check_score_length(self, context_len: int, candidate_count: int) -> None:
        limit = self.info.max_context_tokens
        if context_len > limit:
            raise InvalidArgumentError("context", f"{context_len} tokens exceed max_context_tokens {limit}")
        if context_len + candidate_count > limit:
            raise InvalidArgumentError(
                "candidate_tokens",
                f"context ({context_len}) + {candidate_count} candidates exceed max_context_tokens {limit}",
            )

    def _dense_draft_probs(self, draft_probs: Sequence[SparseProbs] | None) -> torch.Tensor | None:
        if draft_probs is None:
            return None
        rows = [
            sparse_to_dense(
                torch.tensor([row.token_ids], dtype=torch.int64),
                torch.tensor([row.probs], dtype=torch.float32),
                self._vocab_size,
            )
            for row in draft_probs
        ]
        if not rows:
            return torch.zeros((0, self._vocab_size), dtype=torch.float32)
        return torch.cat(rows)  # [k, vocab]

    def _forward(
        self,
        session: CacheSession,
        tokens: list[int],
        keep: int,
        stats: ForwardStats,
        cancel: CancelSignal | None = None,
    ) -> torch.Tensor:  # [keep, vocab] float32 on the CPU
        """Feeds tokens after the session's cached ones; returns the logits of the last ``keep``.

        Raises ``CallCancelledError`` instead of starting once ``cancel`` is set.
        """
        if cancel is not None and cancel.cancelled:
            raise CallCancelledError(stats)
        started = self._clocks.timer()
        input_ids = torch.tensor([tokens], dtype=torch.long, device=self._device)
        extra = {"logits_to_keep": keep} if self._keeps_logits else {}
        output = self.model(input_ids=input_ids, cache=session.kv, use_cache=True, **extra)
        logits: torch.Tensor = output.logits[0, -keep:].to(device=SAMPLING_DEVICE, dtype=torch.float32)
        session.kv_len += len(tokens)
        stats.forwards += 1
        stats.computed_tokens += len(tokens)
        self._pad(started, stats, cancel)
        return logits

    def _pad(self, started: float, stats: ForwardStats, cancel: CancelSignal | None) -> None:
        """Sleeps out the rest of the emulated latency (cut short by ``cancel``); counts an overrun."""
        emulated = self._settings.emulated_forward_seconds
        padding = emulated - (self._clocks.timer() - started)
        self.forwards_served += 1
        if emulated > 0 and padding <= 0:
            stats.emulated_overruns += 1
            self.emulated_overruns += 1
        try:
            if padding > 0 and cancel is None:
                self._clocks.sleep(padding)
            elif padding > 0 and cancel is not None and cancel.wait(padding):
                raise CallCancelledError(stats)
        finally:
            stats.compute_seconds += self._clocks.timer() - started

    @contextlib.contextmanager
    def _kept_if_cancelled(self, session: CacheSession, tokens: Sequence[int]) -> Iterator[None]:
        """Keeps what a cancelled call fed; drops a sequence whose cache may be half-updated on a failure.

        ``tokens`` start with the whole context; a cancelled call stopped between forwards (or in a
        pad, after its forward), so the cache holds exactly ``tokens[:session.kv_len]``.
        """
        try:
            yield
        except CallCancelledError:
            self.cache.commit(session, tokens[: session.kv_len], kv_len=session.kv_len)
            raise
        except BaseException:
            self.cache.release([session.sequence_id])
            raise
