"""Recall metrics: what share of the answer (and of its evidence) reached the context."""

from __future__ import annotations

import re
from collections.abc import Iterable

from bm25s.stopwords import STOPWORDS_EN

WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(STOPWORDS_EN) | {"s", "t", "her", "his", "he", "she", "they", "their", "i", "my", "me", "was"}


def content_words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if w not in STOPWORDS}


def answer_token_recall(answer: str, context: str) -> float:
    wanted = content_words(answer)
    if not wanted:
        return 1.0
    return len(wanted & content_words(context)) / len(wanted)


def evidence_recall(evidence: Iterable[str], sources: Iterable[str]) -> float:
    wanted = set(evidence)
    if not wanted:
        return 1.0
    return len(wanted & set(sources)) / len(wanted)
