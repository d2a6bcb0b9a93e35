"""Model-free drafting: proposals looked up in token strings the drafter has seen (pure; no torch).

- ``ngram`` — prompt lookup: the longest recent n-gram suffix match in a sequence's context proposes the
  tokens that followed it (``NgramIndex``).
- ``suffix`` — suffix-tree drafting after SuffixDecoding (Oliaro et al., arXiv 2411.04975): a suffix tree
  truncated at a depth, with occurrence counts, over the context (``SuffixIndex``) and, optionally, over
  earlier outputs (``OutputMemory``); each draft token is the most frequent continuation of the longest
  matching suffix.

A proposal is a deterministic function of the indexed strings and the context, so the service ships
each draft token as a point mass ``{token: 1.0}`` and the target's speculative sampling keeps the
output law exactly the target's at any temperature.
"""

from core.lookup.ngram import NgramIndex
from core.lookup.suffix import OutputMemory, Proposal, SuffixIndex, SuffixTree, suffix_draft

__all__ = ["NgramIndex", "OutputMemory", "Proposal", "SuffixIndex", "SuffixTree", "suffix_draft"]
