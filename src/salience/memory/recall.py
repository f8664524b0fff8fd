"""Recall: from the current turn to the memories worth injecting, within a token budget.

    candidates  the user's whole memory set, cached until the store's version for the user moves
    relevance   dense similarity (the embedder) + lexical BM25 (memory/lexical.py), both in-process,
                so every store behaves the same; memories about someone else than the person the turn
                names count for less
    salience    importance, decay and reinforcement (memory/salience.py), as of ``at``
    packing     best score first, near-duplicates skipped, counted exactly with tiktoken
    confidence  calibrated on the best relevance margin; nothing found and the turn refers to
                the past -> an honest "you don't remember this" note; nothing found otherwise ->
                nothing injected rather than noise
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from salience.background import at_once
from salience.memory.confidence import FOUND_AT, TOP_MATCHES, named_confidence, refers_to_past, unnamed_confidence
from salience.memory.embed import Embedder
from salience.memory.inject import arc_line, render_context, render_nothing_remembered
from salience.memory.memory_cache import MemoryCache
from salience.memory.memory_set import MemorySet
from salience.memory.arc import Arc, render_arc_note
from salience.memory.person import PersonCache
from salience.memory.shared_embeddings import SharedEmbeddings
from salience.memory.tokens import count_tokens
from salience.model import MemoryItem, UserRef, utcnow
from salience.settings import MemorySettings
from salience.store.base import Store

log = logging.getLogger("salience.recall")

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


class Recaller:
    def __init__(
        self, store: Store, embedder: Embedder, until_no_replies: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """``until_no_replies``: what a refresh waits for before it starts (``ReplyGauge``)."""
        # shared: the request path has usually started embedding the turn already (screening)
        self.embedder = embedder if isinstance(embedder, SharedEmbeddings) else SharedEmbeddings(embedder)
        self.cache = MemoryCache(store, quantized=True)
        self.people = PersonCache(store)
        self.until_no_replies = until_no_replies or at_once
        self._refreshing: dict[UserRef, asyncio.Task[None]] = {}

    def refresh(self, user: UserRef) -> None:
        """An extraction was committed for ``user``: bring their memory set and person model up
        to date in the background, rather than in the next reply (which, while the reply before
        waited for its upstream, usually has not arrived yet).

        It waits until no reply is being prepared: a catch-up holds the event loop for
        milliseconds (at 10k memories), and begun as a commit lands it would hold up whichever
        reply was being prepared then (begun as that reply's recall ended, it held up its upstream
        call). A reply that comes while it runs waits for it; one that comes before it has run
        catches the set up itself."""
        running = self._refreshing.get(user)
        if running is not None and not running.done():
            return  # the one waiting or running reads the store after this commit anyway
        self._refreshing[user] = asyncio.get_running_loop().create_task(self._refresh(user))

    async def _refresh(self, user: UserRef) -> None:
        try:
            await self.until_no_replies()
            memory_set, _ = await self.cache.get_checked(user)
            await self.people.get(user, memory_set.version)
        except Exception as exc:  # the next request brings them up to date as before
            log.warning("refreshing a user's memory after a commit failed: %s", type(exc).__name__)
        finally:
            self._refreshing.pop(user, None)

    def forget(self, user: UserRef) -> None:
        """Erasure: drop everything this process holds of the user (memory set, person model)."""
        self.cache.forget(user)
        self.people.forget(user)

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
        self.embedder.start(query)  # off the event loop, while the store and the lexical index answer
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

        # Everything that needs no query vector is worked out here, on the event loop, while the
        # vector is computed on its thread: the lexical scores, whom each memory is about, the
        # user's people the turn refers to, salience and the latest session.
        named, about = memory_set.about(query)
        assert memory_set.lexical is not None, "recall's cache keeps the BM25 index"
        lexical = LEXICAL_WEIGHT * memory_set.lexical.scores(strip_names(query, named))
        subject_weight = np.where(about, 1.0, OTHER_SUBJECT)
        # The user's own people, when the turn names no speaker of a transcript (then the
        # speaker's own margin decides whose memory it is).
        linked = person.linked_mask(query, memory_set.ids, len(memory_set.items), memory_set.speakers) if not named else None
        salience_weight = 1 - SALIENCE_WEIGHT + SALIENCE_WEIGHT * memory_set.salience(now.timestamp(), settings.half_life_days)
        latest_session = RECENT_SESSION_BONUS * self._latest_session(memory_set, eligible)

        query_vector = (await self.embedder.embed([query]))[0]
        dense = memory_set.rows.scores(query_vector)
        content_relevance = DENSE_WEIGHT * dense + lexical
        relevance = content_relevance * subject_weight
        confidence = self._confidence(named, about, eligible, content_relevance, dense)
        if linked is not None and linked.any():  # as with a named speaker: memories about someone else count less
            relevance = relevance * np.where(linked, 1.0, OTHER_SUBJECT) + ENTITY_BONUS * linked
            if (linked & eligible).any():
                confidence = max(confidence, ENTITY_CONFIDENCE)
        if confidence < FOUND_AT:
            return self._nothing_found(query, budget, confidence, model, pinned, arc, arc_note)

        score = relevance * salience_weight
        score = np.maximum(score, SAME_MESSAGE_WEIGHT * memory_set.best_in_message(score))
        score += latest_session
        score = np.where(eligible & (relevance >= settings.min_relevance), score, -np.inf)
        top = top_indices(score, CANDIDATES)
        order = top[np.isfinite(score[top])].tolist()
        if not current and order:
            alive = await self.cache.store.existing_memory_ids(user, [memory_set.items[i].id for i in order])
            order = [i for i in order if memory_set.items[i].id in alive]

        chosen = pack_into_budget(memory_set, order, score, budget, settings.max_items, model)
        context, tokens = "", 0
        while chosen:  # the estimate adds line by line; the exact count of the whole block decides
            context = render_context([m.item for m in chosen], arc_note=arc_note)
            tokens = count_tokens(context, model)
            if tokens <= full_budget:
                break
            chosen.pop()
        if not chosen:
            return self._nothing_found(query, budget, confidence, model, pinned, arc, arc_note)
        return Recall(context, tokens, confidence, True, chosen, pinned, arc, arc_note)

    @staticmethod
    def _confidence(
        named: set[str], about: np.ndarray, eligible: np.ndarray, content_relevance: np.ndarray, dense: np.ndarray
    ) -> float:
        if not named:
            return unnamed_confidence(float(dense[eligible].max()))
        mine, others = eligible & about, eligible & ~about
        return named_confidence(best_of(content_relevance[mine]), best_of(content_relevance[others]))

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


def best_of(values: np.ndarray, count: int = TOP_MATCHES) -> np.ndarray:
    """The ``count`` best values, best first (fewer when there are fewer; a partial partition)."""
    if len(values) > count:
        values = np.partition(values, len(values) - count)[-count:]
    return np.sort(values)[::-1]


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
    """Best-scored memories whose rendered lines fit ``budget`` tokens, near-duplicates skipped
    (line by line: the caller counts the rendered block exactly)."""
    if not order:
        return []
    line_tokens = memory_set.line_tokens_of(np.asarray(order))
    # the cheapest line still to come: once even that cannot fit, nothing more will
    cheapest_after = np.minimum.accumulate(line_tokens[::-1])[::-1].tolist()
    frame = count_tokens(render_context([memory_set.items[order[0]]]), model) - int(line_tokens[0])
    used = frame
    days: set[str] = set()
    chosen: list[int] = []
    chosen_vectors = np.empty((min(max_items, len(order)), memory_set.rows.dim), dtype=np.float32)
    for position, (index, tokens) in enumerate(zip(order, line_tokens.tolist())):
        if len(chosen) >= max_items or used + cheapest_after[position] + 1 > budget:
            break
        if used + tokens + 1 > budget:  # lookups first; the day label and near-duplicate check cost more
            continue
        label = memory_set.day_label(index)
        cost = tokens + 1 + (0 if label in days or not chosen else label_tokens(label) + 1)
        if used + cost > budget:
            continue
        vector = memory_set.items[index].embedding  # float32, as stored: one contiguous read
        if chosen and float((chosen_vectors[:len(chosen)] @ vector).max()) >= NEAR_DUPLICATE:
            continue
        chosen_vectors[len(chosen)] = vector
        chosen.append(index)
        days.add(label)
        used += cost
    return [RecalledMemory(memory_set.items[i], float(score[i])) for i in chosen]
