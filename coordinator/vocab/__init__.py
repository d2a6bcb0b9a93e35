"""Pure cross-tokenizer vocabulary alignment (no gRPC, asyncio or protobuf).

* ``canonical``: the exact bytes every token id contributes to decoded text (byte-level BPE,
  SentencePiece with byte fallback, added and special tokens), read from the tokenizer's decoder.
* ``intersection``: TLI's injective drafter -> target map over identical canonical bytes, its coverage,
  and the end-to-end check that every mapped pair decodes identically with both tokenizers.
* ``identity``: whether two tokenizers share one vocabulary up to padding (compares tokenizers, never
  ``vocab_size``), so such pairs take the exact same-vocabulary path.
* ``retokenize``: SLEM's windowed re-tokenization between vocabularies (text is the common currency),
  held-back incomplete UTF-8 tails, and the drafter's re-sync to the committed text.

Papers: Timor et al., "Accelerating LLM Inference with Lossless Speculative Decoding Algorithms for
Heterogeneous Vocabularies", ICML 2025 (arXiv 2502.05202): SLEM (Alg. 2), TLI (Alg. 4).
"""

from coordinator.vocab.canonical import CanonicalVocab, DecodeScheme, DummyPrefix, TokenKind
from coordinator.vocab.identity import VocabularyMatch, compare_vocabularies
from coordinator.vocab.intersection import (
    NOT_IN_INTERSECTION,
    DecodeCheck,
    IntersectionMap,
    TokenDecodes,
    build_intersection,
    check_intersection_decodes,
    token_decodes,
)
from coordinator.vocab.retokenize import (
    DEFAULT_WINDOW_TOKENS,
    DrafterResync,
    EncodedText,
    Retokenized,
    draft_continuation,
    encode_after,
    resync_drafter,
    retokenize_continuation,
    spell_text,
)

__all__ = [
    "DEFAULT_WINDOW_TOKENS",
    "NOT_IN_INTERSECTION",
    "CanonicalVocab",
    "DecodeCheck",
    "DecodeScheme",
    "DrafterResync",
    "DummyPrefix",
    "EncodedText",
    "IntersectionMap",
    "Retokenized",
    "TokenDecodes",
    "TokenKind",
    "VocabularyMatch",
    "build_intersection",
    "check_intersection_decodes",
    "compare_vocabularies",
    "draft_continuation",
    "encode_after",
    "resync_drafter",
    "retokenize_continuation",
    "spell_text",
    "token_decodes",
]
