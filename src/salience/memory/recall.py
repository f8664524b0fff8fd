"""Recall: from the current turn to the memories worth injecting, within a token budget.

    candidates  the user's whole memory set, cached until the store's version for the user moves
    relevance   dense similarity (the embedder) + lexical BM25 (bm25s), both in-process, so every
                store behaves the same; memories about someone else than the person the turn
                names count for less
    salience    importance, decay and reinforcement (memory/salience.py), as of ``at``
    packing     best score first, near-duplicates skipped, counted exactly with tiktoken
    confidence  calibrated on the best relevance; nothing found and the turn refers to the
                past -> an honest "you don't remember this" note; nothing found otherwise ->
                nothing injected rather than noise
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from salience.memory.confidence import FOUND_AT, named_confidence, refers_to_past, unnamed_confidence
from salience.memory.embed import Embedder
from salience.memory.inject import arc_line, day_label, render_context, render_line, render_nothing_remembered
from salience.memory.lexical import LexicalIndex
from salience.memory.arc import Arc, render_arc_note
from salience.memory.person import PersonCache
from salience.memory.salience import salience_array
from salience.memory.tokens import count_tokens
from salience.model import MemoryItem, UserRef, utcnow
from salience.settings import MemorySettings
from salience.store.base import Store

DENSE_WEIGHT = 0.6
LEXICAL_WEIGHT = 0.4
SALIENCE_WEIGHT = 0.15  # score = relevance * (1 - w + w * salience): relevance leads, salience orders
OTHER_SUBJECT = 0.65  # a memory about someone other than the person the turn names
RECENT_SESSION_BONUS = 0.03
NEAR_DUPLICATE = 0.95
SAME_MESSAGE_WEIGHT = 0.85
CANDIDATES = 400
# Entities (memory/person.py): a memory linked to an entity the turn refers to ("my sister" ->
# the memories that only say "Sarah") gains this much relevance, and recall is at least this
# confident that it found something about it.
ENTITY_BONUS = 0.25
ENTITY_CONFIDENCE = 0.75
# The arc note, when significant, takes at most this share of the budget (and these many tokens).
ARC_BUDGET_SHARE = 0.2
ARC_MAX_TOKENS = 90

log = logging.getLogger("salience.recall")
NAME = re.compile(r"\b[A-Z][a-z]+(?:'s)?\b")


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
    arc: Arc | None = None
    arc_note: str = ""  # in ``context`` already; kept apart for a caller that renders its own block

    @property
    def ids(self) -> list[str]:
        return [m.item.id for m in self.memories]


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


class Recaller:
    def __init__(self, store: Store, embedder: Embedder) -> None:
        self.embedder = embedder
        self.cache = MemoryCache(store)
        self.people = PersonCache(store)

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
        now = at or utcnow()
        memory_set, current = await self.cache.get_checked(user)
        pinned = [m for m in memory_set.pinned_items if m.created_at <= now]
        if not current and pinned:  # a stale set: nothing erased since may be injected
            alive = await self.cache.store.existing_memory_ids(user, [m.id for m in pinned])
            pinned = [m for m in pinned if m.id in alive]
        eligible = memory_set.created <= now.timestamp()
        person = await self.people.get(user, memory_set.version)
        arc = person.arc(at)
        arc_note = fit_arc_note(arc, budget, model)
        full_budget = budget
        budget -= count_tokens(arc_line(arc_note), model) + 1 if arc_note else 0
        if not query.strip() or budget <= 0 or not eligible.any():
            return self._nothing_found(query, budget, 0.0, model, pinned, arc, arc_note)

        query_vector = (await self.embedder.embed([query]))[0]
        # einsum, not BLAS: OpenBLAS splits a 10k x 384 product over every core and, on a busy
        # 2-core server, spends 16 ms waiting for them instead of 1.7 ms on one.
        dense = np.einsum("ij,j->i", memory_set.matrix, query_vector)
        named, about = memory_set.about(query)
        content_query = strip_names(query, named)
        content_relevance = DENSE_WEIGHT * dense + LEXICAL_WEIGHT * memory_set.lexical.scores(content_query)
        relevance = content_relevance * np.where(about, 1.0, OTHER_SUBJECT)
        confidence = self._confidence(named, about, eligible, content_relevance, dense)
        # The user's own people, when the turn names no speaker of a transcript (then the
        # speaker's own margin above decides whose memory it is).
        linked = person.linked_mask(query, memory_set.items, memory_set.speakers) if not named else None
        if linked is not None and linked.any():  # as with a named speaker: memories about someone else count less
            relevance = relevance * np.where(linked, 1.0, OTHER_SUBJECT) + ENTITY_BONUS * linked
            if (linked & eligible).any():
                confidence = max(confidence, ENTITY_CONFIDENCE)
        if confidence < FOUND_AT:
            return self._nothing_found(query, budget, confidence, model, pinned, arc, arc_note)

        salience = salience_array(
            memory_set.importance, memory_set.anchor, memory_set.reinforcements, now.timestamp(),
            settings.half_life_days, memory_set.pinned,
        )
        score = relevance * (1 - SALIENCE_WEIGHT + SALIENCE_WEIGHT * salience)
        score = np.maximum(score, SAME_MESSAGE_WEIGHT * memory_set.best_in_message(score))
        score += RECENT_SESSION_BONUS * self._latest_session(memory_set, eligible)
        score = np.where(eligible & (relevance >= settings.min_relevance), score, -np.inf)
        top = top_indices(score, CANDIDATES)
        order = top[np.isfinite(score[top])].tolist()
        if not current and order:
            alive = await self.cache.store.existing_memory_ids(user, [memory_set.items[i].id for i in order])
            order = [i for i in order if memory_set.items[i].id in alive]

        chosen = pack_into_budget(memory_set, order, score, budget, settings.max_items, model)
        if not chosen:
            return self._nothing_found(query, budget, confidence, model, pinned, arc, arc_note)
        context = render_context([m.item for m in chosen], arc_note=arc_note)
        while len(chosen) > 1 and count_tokens(context, model) > full_budget:  # token merges at the seam
            chosen.pop()
            context = render_context([m.item for m in chosen], arc_note=arc_note)
        return Recall(context, count_tokens(context, model), confidence, True, chosen, pinned, arc, arc_note)

    @staticmethod
    def _confidence(
        named: set[str], about: np.ndarray, eligible: np.ndarray, content_relevance: np.ndarray, dense: np.ndarray
    ) -> float:
        if not named:
            return unnamed_confidence(float(dense[eligible].max()))
        mine, others = eligible & about, eligible & ~about
        best_about = float(content_relevance[mine].max()) if mine.any() else 0.0
        best_other = float(content_relevance[others].max()) if others.any() else 0.0
        return named_confidence(best_about, best_other)

    @staticmethod
    def _latest_session(memory_set: MemorySet, eligible: np.ndarray) -> np.ndarray:
        """1 for memories from the most recent earlier session: recent context is always a candidate."""
        if not eligible.any():
            return np.zeros(len(memory_set.items))
        newest = int(np.argmax(np.where(eligible, memory_set.created, -np.inf)))
        if not memory_set.session_ids[newest]:
            return np.zeros(len(memory_set.items))
        return (memory_set.session_codes == memory_set.session_codes[newest]).astype(np.float64)

    @staticmethod
    def _nothing_found(
        query: str, budget: int, confidence: float, model: str | None, pinned: list[MemoryItem],
        arc: Arc | None = None, arc_note: str = "",
    ) -> Recall:
        if refers_to_past(query):
            note = render_nothing_remembered(arc_note=arc_note)
            tokens = count_tokens(note, model)
            if tokens <= budget + (count_tokens(arc_line(arc_note), model) + 1 if arc_note else 0):
                return Recall(note, tokens, confidence, False, [], pinned, arc, arc_note)
        if arc_note:  # a significant arc is worth saying even when no memory is
            context = render_context([], arc_note=arc_note)
            return Recall(context, count_tokens(context, model), confidence, False, [], pinned, arc, arc_note)
        return Recall(confidence=confidence, pinned=pinned, arc=arc)


def fit_arc_note(arc: Arc, budget: int, model: str | None) -> str:
    """The arc note when the arc is significant and it fits its share of the budget (recurring
    themes are dropped first); else nothing."""
    if not arc.significant:
        return ""
    allowed = min(ARC_MAX_TOKENS, int(budget * ARC_BUDGET_SHARE))
    for themes in (2, 1, 0):
        note = render_arc_note(arc, themes)
        if note and count_tokens(arc_line(note), model) + 1 <= allowed:
            return note
    return ""


def top_indices(score: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` best indices, best first: a partial partition, then a sort of those only."""
    if len(score) > count:
        top = np.argpartition(-score, count - 1)[:count]
        return top[np.argsort(-score[top], kind="stable")]
    return np.argsort(-score, kind="stable")


def strip_names(query: str, names: set[str]) -> str:
    """The turn without the names of the people it is about: what it asks, not whom."""
    for name in names:
        query = re.sub(rf"\b{re.escape(name)}(?:'s)?\b", " ", query)
    return query


@functools.lru_cache(maxsize=4096)
def label_tokens(label: str) -> int:
    return count_tokens(label)


def pack_into_budget(
    memory_set: MemorySet, order: list[int], score: np.ndarray, budget: int, max_items: int, model: str | None
) -> list[RecalledMemory]:
    """Best-scored memories whose rendered block fits ``budget`` tokens exactly, near-duplicates skipped."""
    frame = count_tokens(render_context([memory_set.items[order[0]]]), model) - memory_set.line_tokens(order[0]) if order else 0
    used = frame
    days: set[str] = set()
    chosen: list[int] = []
    for index in order:
        if len(chosen) >= max_items:
            break
        # the budget check first: it is a lookup, the near-duplicate check a matrix product
        label = memory_set.day_label(index)
        cost = memory_set.line_tokens(index) + 1 + (0 if label in days or not chosen else label_tokens(label) + 1)
        if used + cost > budget:
            continue
        if chosen and float((memory_set.matrix[chosen] @ memory_set.matrix[index]).max()) >= NEAR_DUPLICATE:
            continue
        chosen.append(index)
        days.add(label)
        used += cost
    # the estimate above adds line by line; the exact count decides
    while chosen and count_tokens(render_context([memory_set.items[i] for i in chosen]), model) > budget:
        chosen.pop()
    return [RecalledMemory(memory_set.items[i], float(score[i])) for i in chosen]
