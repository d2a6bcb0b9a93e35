"""Prompt lookup: the longest recent n-gram suffix match proposes the tokens that followed it.

``NgramIndex`` indexes every n-gram (``min_n <= n <= max_n``) of a growing token string by where its
two latest occurrences end. A draft takes the longest n whose suffix n-gram also occurred earlier, the
most recent such occurrence, and copies what followed it. The copy may run past the end of the string
into the draft itself (as an LZ77 copy does), so a match just behind the end repeats a period: after
``a b c a b c a b`` a 2-gram match proposes ``c a b c ...``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable


class NgramIndex:
    """The n-grams of a token string, appended to token by token (``extend``)."""

    def __init__(self, min_n: int, max_n: int) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got {min_n}, {max_n}")
        self.min_n, self.max_n = min_n, max_n
        self.tokens: list[int] = []
        self._latest: dict[tuple[int, ...], int] = {}  # n-gram -> end (exclusive) of its latest occurrence
        self._previous: dict[tuple[int, ...], int] = {}  # n-gram -> end of the occurrence before that

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self.tokens.append(int(token))
            end = len(self.tokens)
            for n in range(self.min_n, min(self.max_n, end) + 1):
                gram = tuple(self.tokens[end - n : end])
                latest = self._latest.get(gram)
                if latest is not None:
                    self._previous[gram] = latest
                self._latest[gram] = end

    def match(self) -> tuple[int, int] | None:
        """``(n, end)``: the longest n-gram suffix that occurred before, and where its latest earlier
        occurrence ends; None without one."""
        size = len(self.tokens)
        for n in range(min(self.max_n, size - 1), self.min_n - 1, -1):
            end = self._previous.get(tuple(self.tokens[size - n :]))
            if end is not None:
                return n, end
        return None

    def propose(self, budget: int, stop_token_ids: Collection[int] = ()) -> tuple[int, ...]:
        """Up to ``budget`` tokens copied after the match; a stop token ends the draft (kept)."""
        found = self.match()
        if found is None or budget <= 0:
            return ()
        _, end = found
        size = len(self.tokens)
        draft: list[int] = []
        for j in range(budget):
            position = end + j
            token = self.tokens[position] if position < size else draft[position - size]
            draft.append(token)
            if token in stop_token_ids:
                break
        return tuple(draft)
