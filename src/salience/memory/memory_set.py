"""One user's memories as arrays ready to score (the per-process cache of them is in
``memory_cache.py``).

A set is built once and then brought up to date with what changed (``MemorySet.updated``);
recall (``recall.py``) scores against it. Kept apart from the scorer: this module owns the
arrays and their updates, recall owns relevance, salience and packing.
"""

from __future__ import annotations

import copy
import math
import re

import numpy as np

from salience.memory.inject import day_label, render_line
from salience.memory.lexical import LexicalIndex
from salience.memory.rows import Rows
from salience.memory.salience import salience_array
from salience.memory.subject import subjects
from salience.memory.tokens import count_tokens
from salience.model import MemoryItem

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
        quantized: bool = False,
    ) -> None:
        """``previous``: the user's set this one replaces, whose tokenized texts are reused.
        ``unranked``: the ids of the user's other memories (no embedding), held only so that
        ``held`` counts every memory of the user. ``lexical``: False for a reader that never
        scores a query (the extraction worker): no BM25 index is built or kept up to date.
        ``quantized``: the embeddings kept as int8 (``rows.Rows``), for a reader that scores
        queries (the serving process)."""
        self.version = version
        self.items = items
        # Pinned memories (safety) are never ranked or budgeted: recall returns them as they are.
        self.pinned_items = pinned_items or []
        self.unranked = unranked
        self.ids = {m.id: n for n, m in enumerate(items)}
        self.rows = Rows.of(
            np.stack([m.embedding for m in items]).astype(np.float32) if items else np.zeros((0, 0), np.float32), quantized
        )
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
    def matrix(self) -> np.ndarray:
        """The embeddings as float32, one row per ranked memory."""
        return self.rows.matrix

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

    def _group(
        self, joining: list[MemoryItem], groups: np.ndarray, codes: np.ndarray, session_ids: np.ndarray,
        before: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Number the messages and sessions of ``joining`` after those of the memories before
        them (``groups``, ``codes``, ``session_ids``, and ``before``, their order by message and
        where each message starts), in order of first appearance, as a build from scratch
        numbers them."""
        first_sources = [m.sources[0] if m.sources else m.id for m in joining]
        groups_before = len(self._groups)
        new_groups = np.array(
            [self._groups.setdefault(source, len(self._groups)) for source in first_sources], dtype=np.int64
        )
        self.message_group = np.concatenate([groups, new_groups])
        self.group_count = len(self._groups)
        # memories sorted by message, and where each message's run starts: one reduceat per query
        if before is not None and (new_groups >= groups_before).all():  # new messages only: they sort last
            by_group, starts = before
            joined = np.argsort(new_groups, kind="stable")
            self._by_group = np.concatenate([by_group, len(groups) + joined])
            self._group_starts = np.concatenate([starts, len(groups) + np.searchsorted(
                new_groups[joined], np.arange(groups_before, self.group_count))])
        else:
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
        new.rows = self.rows.taken(kept) if removed else self.rows
        if joining:
            new.rows = new.rows.extended(np.stack([m.embedding for m in joining]).astype(np.float32))
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
            new._group(
                joining, self.message_group, self.session_codes, self.session_ids, (self._by_group, self._group_starts)
            )
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
