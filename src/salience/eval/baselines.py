"""What apps do today, as baselines: raw transcript turns packed into the same token budget.

- last-N tokens: the most recent turns that fit (pasting the transcript back in);
- BM25 top-k over raw turns (a keyword index, the same tokenizer and stemmer as salience's);
- MiniLM top-k over raw turns (a flat vector store).
Every turn is prefixed with its session date, so the baselines can answer "when" questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import bm25s
import numpy as np

from salience.eval.locomo_data import Conversation, Turn
from salience.memory.embed import Embedder
from salience.memory.lexical import tokenize
from salience.memory.tokens import count_tokens


@dataclass
class Packed:
    context: str
    tokens: int
    sources: list[str]


def turn_line(turn: Turn) -> str:
    return f"[{turn.date_label}] {turn.speaker}: {turn.text}"


@lru_cache(maxsize=100_000)
def line_tokens(line: str) -> int:
    return count_tokens(line)


def pack_lines(ranked: list[Turn], budget: int, chronological: bool = True) -> Packed:
    """Best-ranked turns that fit ``budget`` cl100k tokens, rendered oldest first."""
    chosen: list[Turn] = []
    used = 0
    for turn in ranked:
        cost = line_tokens(turn_line(turn)) + 1
        if used + cost <= budget:
            chosen.append(turn)
            used += cost
    if chronological:
        chosen.sort(key=lambda t: t.at)
    while chosen:
        context = "\n".join(turn_line(t) for t in chosen)
        tokens = count_tokens(context)
        if tokens <= budget:
            return Packed(context, tokens, [t.dia_id for t in chosen])
        chosen.pop()
    return Packed("", 0, [])


class LastTokensBaseline:
    name = "last-N tokens"

    def __init__(self, conversation: Conversation) -> None:
        self.turns = list(conversation.turns)

    def recall(self, question: str, budget: int) -> Packed:
        return pack_lines(list(reversed(self.turns)), budget)


class BM25Baseline:
    name = "BM25 top-k"

    def __init__(self, conversation: Conversation) -> None:
        self.turns = list(conversation.turns)
        self.index = bm25s.BM25()
        self.index.index(tokenize([turn_line(t) for t in self.turns]), show_progress=False)

    def recall(self, question: str, budget: int) -> Packed:
        query = tokenize([question])
        k = min(len(self.turns), 200)
        ids, _ = self.index.retrieve(query, k=k, show_progress=False)
        return pack_lines([self.turns[i] for i in ids[0]], budget)


class VectorBaseline:
    name = "MiniLM top-k"

    def __init__(self, conversation: Conversation, vectors: np.ndarray, embedder: Embedder) -> None:
        self.turns = list(conversation.turns)
        self.vectors = vectors
        self.embedder = embedder

    @classmethod
    async def build(cls, conversation: Conversation, embedder: Embedder) -> "VectorBaseline":
        vectors = await embedder.embed([turn_line(t) for t in conversation.turns])
        return cls(conversation, vectors, embedder)

    async def recall_async(self, question: str, budget: int) -> Packed:
        query = (await self.embedder.embed([question]))[0]
        order = np.argsort(-(self.vectors @ query))[:200]
        return pack_lines([self.turns[i] for i in order], budget)
