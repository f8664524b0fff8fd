"""Recall: from the current turn to the memories worth injecting, within a token budget.

candidates (the user's memory set, cached per user version) -> relevance (embedding
similarity) -> packing into the budget, counted exactly with tiktoken -> confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from salience.memory.embed import Embedder
from salience.memory.inject import render_context
from salience.memory.tokens import count_tokens
from salience.model import MemoryItem, UserRef
from salience.settings import MemorySettings
from salience.store.base import Store


@dataclass
class RecalledMemory:
    item: MemoryItem
    score: float


@dataclass
class Recall:
    context: str = ""
    tokens: int = 0
    confidence: float = 0.0
    found: bool = False
    memories: list[RecalledMemory] = field(default_factory=list)
    # Pinned memories (safety) are not ranked or budgeted: they are always returned, and
    # rendered by the caller outside the budget.
    pinned: list[MemoryItem] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [m.item.id for m in self.memories]


@dataclass
class _MemorySet:
    version: int
    items: list[MemoryItem]
    matrix: np.ndarray  # one unit-length row per item
    pinned: list[MemoryItem]


class MemoryCache:
    """A user's memories and their embedding matrix, reused until the store's version moves."""

    def __init__(self, store: Store, max_users: int = 10_000) -> None:
        self.store = store
        self.max_users = max_users
        self._sets: dict[UserRef, _MemorySet] = {}

    async def get(self, user: UserRef) -> _MemorySet:
        version = await self.store.memory_version(user)
        cached = self._sets.get(user)
        if cached is not None and cached.version == version:
            return cached
        loaded = await self.store.load_memories(user)
        items = [m for m in loaded if m.embedding is not None and not m.pinned]
        matrix = np.stack([m.embedding for m in items]) if items else np.zeros((0, 0), dtype=np.float32)
        memory_set = _MemorySet(version, items, matrix, [m for m in loaded if m.pinned])
        if len(self._sets) >= self.max_users:
            self._sets.pop(next(iter(self._sets)))
        self._sets[user] = memory_set
        return memory_set


class Recaller:
    def __init__(self, store: Store, embedder: Embedder) -> None:
        self.embedder = embedder
        self.cache = MemoryCache(store)

    async def recall(
        self,
        user: UserRef,
        query: str,
        settings: MemorySettings,
        budget_tokens: int | None = None,
        at: datetime | None = None,
        model: str | None = None,
    ) -> Recall:
        budget = settings.budget_tokens if budget_tokens is None else budget_tokens
        memory_set = await self.cache.get(user)
        pinned = [m for m in memory_set.pinned if at is None or m.created_at <= at]
        if not memory_set.items or not query.strip() or budget <= 0:
            return Recall(pinned=pinned)

        query_vector = (await self.embedder.embed([query]))[0]
        similarities = memory_set.matrix @ query_vector
        ranked = []
        similarity_of: dict[str, float] = {}
        for index in np.argsort(-similarities):
            item = memory_set.items[index]
            similarity = float(similarities[index])
            if similarity < settings.min_similarity:
                break
            if at is not None and item.created_at > at:
                continue
            similarity_of[item.id] = similarity
            ranked.append(RecalledMemory(item, rank_score(similarity, item)))
            if len(ranked) >= settings.max_items:
                break
        ranked.sort(key=lambda m: m.score, reverse=True)

        chosen = pack_into_budget(ranked, budget, model)
        if not chosen:
            return Recall(pinned=pinned)
        best_similarity = max(similarity_of[m.item.id] for m in ranked)
        context = render_context([m.item for m in chosen])
        return Recall(
            context=context,
            tokens=count_tokens(context, model),
            confidence=max(0.0, min(1.0, best_similarity)),
            found=True,
            memories=chosen,
            pinned=pinned,
        )


def rank_score(similarity: float, item: MemoryItem) -> float:
    """Relevance first; among relevant memories, the ones that matter more come first."""
    return similarity * (0.7 + 0.3 * item.importance)


def pack_into_budget(ranked: list[RecalledMemory], budget: int, model: str | None) -> list[RecalledMemory]:
    """The best-ranked memories whose rendered block fits ``budget`` tokens, counted exactly."""
    chosen: list[RecalledMemory] = []
    for candidate in ranked:
        trial = [*chosen, candidate]
        if count_tokens(render_context([m.item for m in trial]), model) <= budget:
            chosen = trial
    return chosen
