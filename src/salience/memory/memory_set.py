"""One user's memories as arrays ready to score, and the per-process cache of them.

A set is rebuilt only when the store's version for the user moves; recall (``recall.py``) scores
against it. Kept apart from the scorer: this module owns loading, caching and rebuilding, recall
owns relevance, salience and packing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import numpy as np

from salience.memory.inject import day_label, render_line
from salience.memory.lexical import LexicalIndex
from salience.memory.tokens import count_tokens
from salience.model import MemoryItem, UserRef
from salience.store.base import Store

log = logging.getLogger("salience.recall")
NAME = re.compile(r"\b[A-Z][a-z]+(?:'s)?\b")


class MemorySet:
    """One user's memories as arrays, ready to score; built once per store version."""

    def __init__(
        self,
        version: int,
        items: list[MemoryItem],
        pinned_items: list[MemoryItem] | None = None,
        previous: "MemorySet | None" = None,
    ) -> None:
        """``previous``: the user's set this one replaces, whose tokenized texts are reused."""
        self.version = version
        self.items = items
        # Pinned memories (safety) are never ranked or budgeted: recall returns them as they are.
        self.pinned_items = pinned_items or []
        self.matrix = np.stack([m.embedding for m in items]).astype(np.float32) if items else np.zeros((0, 0), np.float32)
        self.lexical = LexicalIndex(
            [f"{m.speaker}: {m.text}" for m in items], previous.lexical.words if previous is not None else None
        )
        self.created = np.array([m.created_at.timestamp() for m in items], dtype=np.float64)
        self.anchor = np.array(
            [max(m.created_at, m.last_reinforced_at or m.created_at).timestamp() for m in items], dtype=np.float64
        )
        self.importance = np.array([m.importance for m in items], dtype=np.float64)
        self.reinforcements = np.array([m.mention_count - 1 for m in items], dtype=np.float64)
        self.pinned = np.array([m.pinned for m in items], dtype=bool)
        self.speakers = {m.speaker for m in items}
        first_sources = [m.sources[0] if m.sources else m.id for m in items]
        groups = {source: n for n, source in enumerate(dict.fromkeys(first_sources))}
        self.message_group = np.array([groups[s] for s in first_sources], dtype=np.int64)
        self.group_count = len(groups)
        # memories sorted by message, and where each message's run starts: one reduceat per query
        self._by_group = np.argsort(self.message_group, kind="stable")
        self._group_starts = np.searchsorted(self.message_group[self._by_group], np.arange(self.group_count))
        self.session_ids = np.array([m.session_id or "" for m in items], dtype=object)
        sessions = {session: n for n, session in enumerate(dict.fromkeys(m.session_id or "" for m in items))}
        self.session_codes = np.array([sessions[m.session_id or ""] for m in items], dtype=np.int64)
        self._line_tokens: dict[int, int] = {}
        self._day_labels: dict[int, str] = {}
        self._about: dict[str, np.ndarray] = {}

    def best_in_message(self, score: np.ndarray) -> np.ndarray:
        """For each memory, the best score among memories said in the same message: the
        sentence next to the one that matched often holds the answer."""
        if not self.group_count:
            return score
        best = np.maximum.reduceat(score[self._by_group], self._group_starts)
        return best[self.message_group]

    def line_tokens(self, index: int) -> int:
        if index not in self._line_tokens:
            self._line_tokens[index] = count_tokens(render_line(self.items[index]))
        return self._line_tokens[index]

    def day_label(self, index: int) -> str:
        if index not in self._day_labels:
            self._day_labels[index] = day_label(self.items[index])
        return self._day_labels[index]

    def about(self, query: str) -> tuple[set[str], np.ndarray]:
        """The known speakers the turn names, and which memories are about them (said by them,
        or naming them). A turn that names nobody is about everyone."""
        named = {word.removesuffix("'s") for word in NAME.findall(query)} & self.speakers
        mask = np.ones(len(self.items), dtype=bool) if not named else np.zeros(len(self.items), dtype=bool)
        for name in named:
            if name not in self._about:
                self._about[name] = np.array([m.speaker == name or name in m.text for m in self.items], dtype=bool)
            mask |= self._about[name]
        return named, mask


class MemoryCache:
    """Per-user memory sets, reused until the store's version for the user moves.

    A set is built from the store in full (for 10k memories: ~0.5 s to load, ~0.5 s for the
    arrays and the BM25 index, whose texts the last set already tokenized, ~0.8 s for a first
    build), and extraction moves the version after nearly every turn. A
    reply must not wait for that: a large set whose version moved is served as it was while
    one background task per user rebuilds it, so the newest turn's memories reach recall a
    moment later (the app still has that turn in its own history). Small sets, and a user's
    first set, are built before answering, as before.

    A set served stale may still hold a memory erased since (through another replica): recall
    checks the ids it is about to inject against the store first (``existing_memory_ids``).

    A rebuild runs in the serving process (extraction, by default, does not) and holds the GIL for much of its time, so each user's
    background rebuilds are spaced out: at most one every ``REBUILD_SPACING`` times as long
    as the last one took (for 10k memories: one every ~15 s), which bounds the share of the
    process a very talkative user with a large memory can take to about a tenth.
    """

    REBUILD_IN_BACKGROUND_FROM = 2_000  # memories
    REBUILD_SPACING = 10.0

    def __init__(self, store: Store, max_users: int = 10_000) -> None:
        self.store = store
        self.max_users = max_users
        self._sets: dict[UserRef, MemorySet] = {}
        self._rebuilding: dict[UserRef, asyncio.Task[None]] = {}
        self._next_rebuild: dict[UserRef, float] = {}  # monotonic time a user's next rebuild may start
        self._generation: dict[UserRef, int] = {}  # moved by ``forget``: a build begun before is discarded

    async def get(self, user: UserRef) -> MemorySet:
        return (await self.get_checked(user))[0]

    async def get_checked(self, user: UserRef) -> tuple[MemorySet, bool]:
        """The user's set, and whether it is current (False: served while it is rebuilt)."""
        version = await self.store.memory_version(user)
        cached = self._sets.get(user)
        if cached is not None and cached.version == version:
            return cached, True
        if cached is not None and len(cached.items) >= self.REBUILD_IN_BACKGROUND_FROM:
            running = self._rebuilding.get(user)
            # a task left on another (closed) event loop will never finish: start afresh
            idle = running is None or running.done() or running.get_loop() is not asyncio.get_running_loop()
            if idle and time.monotonic() >= self._next_rebuild.get(user, 0.0):
                self._rebuilding[user] = asyncio.create_task(self._rebuild(user, version))
            return cached, False
        return await self._build(user, version), True

    async def _build(self, user: UserRef, version: int) -> MemorySet:
        generation = self._generation.get(user, 0)
        loaded = await self.store.load_memories(user)
        items = [m for m in loaded if m.embedding is not None and not m.pinned]
        # Off the event loop: other users' requests go on while the arrays and index are built.
        previous = self._sets.get(user)  # dropped by ``forget``: nothing erased is carried over
        memory_set = await asyncio.to_thread(MemorySet, version, items, [m for m in loaded if m.pinned], previous)
        if self._generation.get(user, 0) != generation:  # erased meanwhile: load again
            return await self._build(user, await self.store.memory_version(user))
        if user not in self._sets and len(self._sets) >= self.max_users:
            self._sets.pop(next(iter(self._sets)))
        self._sets[user] = memory_set
        return memory_set

    def forget(self, user: UserRef) -> None:
        """Drop the user's arrays now (erasure), not at the next version check; a rebuild that
        was already loading them is discarded when it finishes."""
        self._sets.pop(user, None)
        self._generation[user] = self._generation.get(user, 0) + 1
        running = self._rebuilding.pop(user, None)
        if running is not None and not running.done():
            running.cancel()

    async def _rebuild(self, user: UserRef, version: int) -> None:
        started = time.monotonic()
        try:
            await self._build(user, version)
        except Exception as exc:  # the stale set keeps serving; the next request tries again
            log.warning("memory set rebuild failed: %s", type(exc).__name__)
        finally:
            finished = time.monotonic()
            self._next_rebuild[user] = finished + self.REBUILD_SPACING * (finished - started)
            if len(self._next_rebuild) > self.max_users:
                self._next_rebuild.pop(next(iter(self._next_rebuild)))
            self._rebuilding.pop(user, None)
