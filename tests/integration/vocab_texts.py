"""Text for property tests on real vocabularies: code, whitespace runs, accents, CJK, emoji."""

from __future__ import annotations

from hypothesis import strategies as st

PIECES = [
    *"abxyzABC019_.,;:()[]{}<>=+-*/#'\"",
    " ",
    "  ",
    "   ",
    "    ",
    "\t",
    "\n",
    "\n\n",
    "\n    ",
    "\n        ",
    "\r\n",
    " the",
    " return",
    "def ",
    "if __name__",
    "é",
    "ß",
    "€",
    "日本語",
    "你好",
    "한국어",
    "Привет",
    "🎉",
    "👩‍💻",
    "🇫🇷",
    "\u200b",
    "e\u0301",  # a decomposed 'é': NFC normalizers compose it
    "𝔘",
]
TEXT = st.lists(st.sampled_from(PIECES), min_size=1, max_size=16).map("".join)
