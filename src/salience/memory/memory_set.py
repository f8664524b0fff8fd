"""One user's memories as arrays ready to score, and the per-process cache of them.

A set is brought up to date when the store's version for the user moves, as a rule with only what
changed; recall (``recall.py``) scores against it. Kept apart from the scorer: this module owns
loading, caching and updating, recall owns relevance, salience and packing.
"""

from __future__ import annotations

import asyncio
import copy
import math
import re

import numpy as np

from salience.background import SpacedTasks
from salience.memory.inject import day_label, render_line
from salience.memory.lexical import LexicalIndex
from salience.memory.rows import RowBuffer
from salience.memory.salience import salience_array
from salience.memory.subject import subjects
from salience.memory.tokens import count_tokens
from salience.model import MemoryItem, UserRef
from salience.store.base import Store

NAME = re.compile(r"\b[A-Z][a-z]+(?:'s)?\b")


class MemorySet:
    """One user's memories as arrays, ready to score; built once per store version, then
    brought up to date with what changed (``updated``)."""

    def __init__(
        self,
        version: int,
        items: list[MemoryItem],
        pinned_items: list[MemoryItem] | None = None,
        previous: "MemorySet | None" = None,
        unranked: frozenset[str] = frozenset(),
        lexical: bool = True,
    ) -> None:
        """``previous``: the user's set this one replaces, whose tokenized texts are reused.
        ``unranked``: the ids of the user's other memories (no embedding), held only so that
        ``held`` counts every memory of the user. ``lexical``: False for a reader that never
        scores a query (the extraction worker): no BM25 index is built or kept up to date."""
        self.version = version
        self.items = items
        # Pinned memories (safety) are never ranked or budgeted: recall returns them as they are.
        self.pinned_items = pinned_items or []
        self.unranked = unranked
        self.ids = {m.id: n for n, m in enumerate(items)}
        self._rows = RowBuffer(np.stack([m.embedding for m in items]).astype(np.float32) if items else np.zeros((0, 0), np.float32))
        self.matrix = self._rows.first(len(items))
        self.lexical: LexicalIndex | None = None
        if lexical:
            known = previous.lexical.words if previous is not None and previous.lexical is not None else None
            self.lexical = LexicalIndex([_text(m) for m in items], known)
        for name, column in _columns(items).items():
            setattr(self, name, column)
        self.speakers = {m.speaker for m in items}
        # whom each memory is about, worked out here (off the request path when built in the background)
        self._subjects = _subjects(items, self.speakers)
        self._groups: dict[str, int] = {}
        self._sessions: dict[str, int] = {}
        self._group(items, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype=object))
        self._line_tokens = np.full(len(items), -1, dtype=np.int64)  # -1: not counted yet
        self._day_labels: dict[int, str] = {}
        self._about: dict[str, np.ndarray] = {}

    # the per-memory columns, set from ``_columns``
    created: np.ndarray
    anchor: np.ndarray
    importance: np.ndarray
    reinforcements: np.ndarray
    pinned: np.ndarray

    @property
    def held(self) -> int:
        """How many of the user's memories the set holds (ranked, pinned and unranked)."""
        return len(self.items) + len(self.pinned_items) + len(self.unranked)

    def held_ids(self) -> list[str]:
        return [*self.ids, *(m.id for m in self.pinned_items), *self.unranked]

    def place_of(self, memory_id: str) -> str | None:
        """Where the set holds a memory: "ranked", "pinned", "unranked", or None."""
        if memory_id in self.ids:
            return "ranked"
        if memory_id in self.unranked:
            return "unranked"
        return "pinned" if any(m.id == memory_id for m in self.pinned_items) else None

    def _group(self, joining: list[MemoryItem], groups: np.ndarray, codes: np.ndarray, session_ids: np.ndarray) -> None:
        """Number the messages and sessions of ``joining`` after those of the memories before
        them (``groups``, ``codes``, ``session_ids``), in order of first appearance, as a build
        from scratch numbers them."""
        first_sources = [m.sources[0] if m.sources else m.id for m in joining]
        new_groups = [self._groups.setdefault(source, len(self._groups)) for source in first_sources]
        self.message_group = np.concatenate([groups, np.array(new_groups, dtype=np.int64)])
        self.group_count = len(self._groups)
        # memories sorted by message, and where each message's run starts: one reduceat per query
        self._by_group = np.argsort(self.message_group, kind="stable")
        self._group_starts = np.searchsorted(self.message_group[self._by_group], np.arange(self.group_count))
        new_sessions = [m.session_id or "" for m in joining]
        self.session_ids = np.concatenate([session_ids, np.array(new_sessions, dtype=object)])
        new_codes = [self._sessions.setdefault(session, len(self._sessions)) for session in new_sessions]
        self.session_codes = np.concatenate([codes, np.array(new_codes, dtype=np.int64)])

    def updated(self, version: int, changed: list[MemoryItem], gone: set[str]) -> "MemorySet | None":
        """This set brought to ``version``: each of ``changed`` (the memories written since, in
        store order) takes its old self's place or joins at the end, the ``gone`` ones leave.
        Unchanged memories keep their rows, words and cached token counts: the cost follows
        the change, not the set. None when a change does not fit in place (a memory whose text,
        embedding, message or kind changed): the caller builds the set afresh then."""
        replaced: dict[int, MemoryItem] = {}
        joining: list[MemoryItem] = []
        pinned = {m.id: m for m in self.pinned_items if m.id not in gone}
        unranked = set(self.unranked - gone)
        for item in changed:
            place = "pinned" if item.pinned else "unranked" if item.embedding is None else "ranked"
            before = self.place_of(item.id) if item.id not in gone else None
            if before is not None and before != place:
                return None
            if place == "pinned":  # replaced whole in the store, where it moves last
                pinned.pop(item.id, None)
                pinned[item.id] = item
            elif place == "unranked":
                unranked.add(item.id)
            elif before is None:
                joining.append(item)
            elif _same_place(self.items[self.ids[item.id]], item):
                replaced[self.ids[item.id]] = item
            else:
                return None
        removed = sorted(self.ids[memory_id] for memory_id in gone if memory_id in self.ids)
        if not (replaced or joining or removed):  # only pinned or unranked memories changed
            new = copy.copy(self)  # the ranked memories, and so the counted sources and salience, are the same
            new.version, new.pinned_items, new.unranked = version, list(pinned.values()), frozenset(unranked)
            return new
        return self._rebuilt(version, replaced, joining, removed, list(pinned.values()), frozenset(unranked))

    def _rebuilt(
        self, version: int, replaced: dict[int, MemoryItem], joining: list[MemoryItem], removed: list[int],
        pinned_items: list[MemoryItem], unranked: frozenset[str],
    ) -> "MemorySet":
        new = MemorySet.__new__(MemorySet)
        new.version, new.pinned_items, new.unranked = version, pinned_items, unranked
        count = len(self.items)
        kept = np.delete(np.arange(count), removed) if removed else np.arange(count)
        items = list(self.items)
        for position, item in replaced.items():
            items[position] = item
        new.items = ([items[i] for i in kept.tolist()] if removed else items) + joining
        new.ids = {m.id: n for n, m in enumerate(new.items)} if removed else {**self.ids, **{
            m.id: count + n for n, m in enumerate(joining)}}
        new._rows = self._rows
        if removed:
            new._rows = RowBuffer(self.matrix[kept])
        if joining:
            new._rows = new._rows.extended(len(kept), np.stack([m.embedding for m in joining]).astype(np.float32))
        new.matrix = new._rows.first(len(new.items))
        new.lexical = self.lexical
        if self.lexical is not None and (joining or removed):
            new.lexical = self.lexical.updated(kept, [_text(m) for m in joining])
        columns = _columns(list(replaced.values()))
        additions = _columns(joining)
        for name in additions:
            column = getattr(self, name)
            if replaced:
                column = column.copy()
                column[list(replaced)] = columns[name]
            setattr(new, name, np.concatenate([column[kept] if removed else column, additions[name]]))
        if removed:  # numbered afresh, so that no message or session is left without a memory
            new.speakers = {m.speaker for m in new.items}
            new._groups, new._sessions = {}, {}
            new._group(new.items, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype=object))
        else:
            new.speakers = self.speakers | {m.speaker for m in joining}
            new._groups, new._sessions = dict(self._groups), dict(self._sessions)
            new._group(joining, self.message_group, self.session_codes, self.session_ids)
        # what was worked out for unchanged memories still holds, at their new positions
        if removed:
            moved = np.full(count, -1, dtype=np.int64)
            moved[kept] = np.arange(len(kept))
            new._line_tokens = np.concatenate([self._line_tokens[kept], np.full(len(joining), -1, dtype=np.int64)])
            new._day_labels = {int(moved[i]): label for i, label in self._day_labels.items() if moved[i] >= 0}
        else:
            new._line_tokens = np.concatenate([self._line_tokens, np.full(len(joining), -1, dtype=np.int64)])
            new._day_labels = dict(self._day_labels)
            counted = self.__dict__.get("_counted")
            if counted is not None:  # a reinforcement only adds sources; nothing left
                new._counted = counted.union(*(m.sources for m in [*replaced.values(), *joining]))
        # whom a memory is about depends on who else speaks: a new speaker works it out afresh
        if new.speakers != self.speakers:
            new._subjects, new._about = _subjects(new.items, new.speakers), {}
        else:
            joined = _subjects(joining, new.speakers)
            new._subjects = ([self._subjects[i] for i in kept.tolist()] if removed else self._subjects) + joined
            new._about = {
                name: np.concatenate([mask[kept] if removed else mask, np.array([name in s for s in joined], dtype=bool)])
                for name, mask in self._about.items()
            }
        return new

    def salience(self, now_timestamp: float, half_life_days: float) -> np.ndarray:
        """Every memory's salience (memory/salience.py) as of ``now_timestamp`` to the minute:
        the same for all of a minute's turns, so worked out once for them (a memory's salience
        moves over days, not seconds)."""
        minute = math.floor(now_timestamp / 60) * 60.0
        key = (minute, half_life_days)
        cached = self.__dict__.get("_salience")
        if cached is None or cached[0] != key:
            values = salience_array(self.importance, self.anchor, self.reinforcements, minute, half_life_days, self.pinned)
            cached = self.__dict__["_salience"] = (key, values)
        return cached[1]

    def item(self, memory_id: str) -> MemoryItem | None:
        """A ranked memory by id."""
        index = self.ids.get(memory_id)
        return self.items[index] if index is not None else None

    def counted_sources(self) -> frozenset[str]:
        """The messages some ranked memory came from (what extraction must not count twice);
        worked out once per set."""
        counted = self.__dict__.get("_counted")
        if counted is None:
            counted = self.__dict__["_counted"] = frozenset(s for m in self.items for s in m.sources)
        return counted

    def best_in_message(self, score: np.ndarray) -> np.ndarray:
        """For each memory, the best score among memories said in the same message: the
        sentence next to the one that matched often holds the answer."""
        if not self.group_count:
            return score
        best = np.maximum.reduceat(score[self._by_group], self._group_starts)
        return best[self.message_group]

    def line_tokens(self, index: int) -> int:
        return int(self.line_tokens_of(np.array([index]))[0])

    def line_tokens_of(self, indices: np.ndarray) -> np.ndarray:
        """The tokens of each memory's rendered line, counted once per memory and kept."""
        counts = self._line_tokens[indices]
        for index in indices[counts < 0].tolist():
            self._line_tokens[index] = count_tokens(render_line(self.items[index]))
        return self._line_tokens[indices]

    def day_label(self, index: int) -> str:
        if index not in self._day_labels:
            self._day_labels[index] = day_label(self.items[index])
        return self._day_labels[index]

    def about(self, query: str) -> tuple[set[str], np.ndarray]:
        """The known speakers the turn names, and which memories are about them (said by them
        of themselves, said to them, or naming them: ``memory/subject.py``). A turn that names
        nobody is about everyone."""
        named = {word.removesuffix("'s") for word in NAME.findall(query)} & self.speakers
        mask = np.ones(len(self.items), dtype=bool) if not named else np.zeros(len(self.items), dtype=bool)
        for name in named:
            if name not in self._about:
                self._about[name] = np.fromiter((name in s for s in self._subjects), dtype=bool, count=len(self.items))
            mask |= self._about[name]
        return named, mask


def _subjects(items: list[MemoryItem], speakers: set[str]) -> list[frozenset[str]]:
    everyone = frozenset(speakers)
    return [subjects(m.text, m.speaker, everyone) for m in items]


def _text(item: MemoryItem) -> str:
    """What the lexical index reads of a memory."""
    return f"{item.speaker}: {item.text}"


def _columns(items: list[MemoryItem]) -> dict[str, np.ndarray]:
    """The per-memory numbers recall scores with, one array each."""
    return {
        "created": np.array([m.created_at.timestamp() for m in items], dtype=np.float64),
        "anchor": np.array(
            [max(m.created_at, m.last_reinforced_at or m.created_at).timestamp() for m in items], dtype=np.float64
        ),
        "importance": np.array([m.importance for m in items], dtype=np.float64),
        "reinforcements": np.array([m.mention_count - 1 for m in items], dtype=np.float64),
        "pinned": np.array([m.pinned for m in items], dtype=bool),
    }


def _same_place(old: MemoryItem, new: MemoryItem) -> bool:
    """Whether ``new`` can take ``old``'s row as it is: only what a reinforcement changes
    (count, date, importance, later sources) differs."""
    return (
        (old.text, old.speaker, old.created_at, old.session_id, old.sources[:1])
        == (new.text, new.speaker, new.created_at, new.session_id, new.sources[:1])
        and old.embedding is not None and new.embedding is not None
        and np.array_equal(old.embedding, new.embedding)
    )


class MemoryCache:
    """Per-user memory sets, kept up to date with the store's version for the user.

    Extraction moves the version after nearly every turn. A cached set is brought up to date
    with what was written since its version (``Store.memory_changes``): for a user with 10k
    memories, a turn's few new and reinforced memories cost a few milliseconds (one store round
    trip, the new rows appended to the arrays, the BM25 weights recomputed), so this is done
    before answering and the newest memories are recalled at once; a user's concurrent requests
    share one catch-up. Deleted memories show as a count lower than the set expects; the set
    then asks which of its ids are gone.

    A set is built from the store in full for a user's first request, and when a catch-up is
    not possible: more than ``CATCH_UP_LIMIT`` memories written since (an import), a change
    that does not fit in place, a count that does not add up. For 10k memories that is ~0.5 s
    to load and ~0.1 s for the arrays and the index. A large set is then served as it was while
    one background task per user rebuilds it, spaced at most one every ``REBUILD_SPACING`` times
    as long as the last took (a rebuild holds the GIL for much of its time); small sets are
    built before answering.

    A set served stale may still hold a memory erased since (through another replica): recall
    checks the ids it is about to inject against the store first (``existing_memory_ids``).
    """

    REBUILD_IN_BACKGROUND_FROM = 2_000  # memories
    REBUILD_SPACING = 10.0
    CATCH_UP_LIMIT = 200  # memories written since the cached version; more: a full build

    def __init__(self, store: Store, max_users: int = 10_000, serve_stale: bool = True, lexical: bool = True) -> None:
        """``serve_stale``: False for a reader that must see every memory (the extraction worker
        consolidates against them): a set is then always brought up to date before it is returned.
        ``lexical``: False for a reader that never scores a query (no BM25 index, see ``MemorySet``)."""
        self.store = store
        self.max_users = max_users
        self.serve_stale = serve_stale
        self.lexical = lexical
        self._sets: dict[UserRef, MemorySet] = {}
        self._rebuilds = SpacedTasks("memory set rebuild", self.REBUILD_SPACING, max_users)
        self._generation: dict[UserRef, int] = {}  # moved by ``forget``: a build begun before is discarded
        self._catching_up: dict[tuple[UserRef, int], asyncio.Future[MemorySet | None]] = {}
        self._no_catch_up: dict[UserRef, int] = {}  # the version of a set no catch-up could start from

    async def get(self, user: UserRef) -> MemorySet:
        return (await self.get_checked(user))[0]

    async def get_checked(self, user: UserRef) -> tuple[MemorySet, bool]:
        """The user's set, and whether it is current (False: served while it is rebuilt)."""
        version = await self.store.memory_version(user)
        cached = self._sets.get(user)
        if cached is not None and cached.version == version:
            return cached, True
        if cached is not None and version > cached.version and self._no_catch_up.get(user) != cached.version:
            generation = self._generation.get(user, 0)
            caught_up = await self._shared_catch_up(user, cached)
            if caught_up is not None and caught_up.version < version:  # joined one that read before this version
                caught_up = await self._shared_catch_up(user, caught_up)
            if caught_up is not None and self._generation.get(user, 0) == generation:
                self._keep(user, caught_up)
                return caught_up, True
            if caught_up is None:  # not from this set: it is rebuilt, and not asked again meanwhile
                self._no_catch_up[user] = cached.version
                if len(self._no_catch_up) > self.max_users:
                    self._no_catch_up.pop(next(iter(self._no_catch_up)))
            cached = self._sets.get(user)  # dropped meanwhile by ``forget``: nothing erased is served
        if self.serve_stale and cached is not None and len(cached.items) >= self.REBUILD_IN_BACKGROUND_FROM:
            self._rebuilds.start(user, lambda: self._build(user, version))
            return cached, False
        return await self._build(user, version), True

    async def _shared_catch_up(self, user: UserRef, cached: MemorySet) -> MemorySet | None:
        """One catch-up from a given set at a time: the user's concurrent requests wait for the
        same one rather than each doing the work."""
        key = (user, cached.version)
        running = self._catching_up.get(key)
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            running = self._catching_up[key] = asyncio.ensure_future(self._catch_up(user, cached))
            running.add_done_callback(lambda done: self._catching_up.pop(key, None))
        # shielded: a request that goes away does not cancel the others' catch-up
        return await asyncio.shield(running)

    async def _catch_up(self, user: UserRef, cached: MemorySet) -> MemorySet | None:
        """``cached`` brought up to date with what was written since its version; None when a
        full build is needed."""
        changes = await self.store.memory_changes(user, cached.version, self.CATCH_UP_LIMIT)
        if changes.changed is None or changes.version < cached.version:
            return None
        changed_ids = {m.id for m in changes.changed}
        joining = sum(1 for m in changes.changed if cached.place_of(m.id) is None)
        gone: set[str] = set()
        if changes.count != cached.held + joining:  # some of the set's memories were deleted
            suspects = [memory_id for memory_id in cached.held_ids() if memory_id not in changed_ids]
            gone = set(suspects) - await self.store.existing_memory_ids(user, suspects)
        updated = cached.updated(changes.version, changes.changed, gone)
        if updated is None or updated.held != changes.count:  # does not add up: build afresh
            return None
        return updated

    def _keep(self, user: UserRef, memory_set: MemorySet) -> None:
        current = self._sets.get(user)
        if current is not None and current.version > memory_set.version:
            return  # a newer set was kept meanwhile (a catch-up while a full build loaded)
        if current is None and len(self._sets) >= self.max_users:
            self._sets.pop(next(iter(self._sets)))
        self._sets[user] = memory_set

    async def _build(self, user: UserRef, version: int) -> MemorySet:
        generation = self._generation.get(user, 0)
        loaded = await self.store.load_memories(user)
        items = [m for m in loaded if m.embedding is not None and not m.pinned]
        pinned = [m for m in loaded if m.pinned]
        unranked = frozenset(m.id for m in loaded if m.embedding is None and not m.pinned)
        # Off the event loop: other users' requests go on while the arrays and index are built.
        previous = self._sets.get(user)  # dropped by ``forget``: nothing erased is carried over
        memory_set = await asyncio.to_thread(MemorySet, version, items, pinned, previous, unranked, self.lexical)
        if self._generation.get(user, 0) != generation:  # erased meanwhile: load again
            return await self._build(user, await self.store.memory_version(user))
        self._keep(user, memory_set)
        return memory_set

    def forget(self, user: UserRef) -> None:
        """Drop the user's arrays now (erasure), not at the next version check; a rebuild that
        was already loading them is discarded when it finishes."""
        self._sets.pop(user, None)
        self._generation[user] = self._generation.get(user, 0) + 1
        self._rebuilds.cancel(user)

