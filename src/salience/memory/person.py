"""Knowing the person: entities and arc signals from each extraction job, and the per-user
view recall reads (reloaded when the store's version for the user moves).

The worker calls ``update_person_model`` with the memories a job adds, before it commits them:
entities, links and message signals are all keyed by stable ids, so a job that runs again
writes the same rows again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Mapping

import numpy as np

from salience.background import SharedRuns, SpacedTasks
from salience.memory.arc import Arc, SessionTally, arc_of, compute_arc, message_signals, session_tallies
from salience.memory.entities import EntityResolver, MemoryText, entities_in_query
from salience.model import Entity, MemoryItem, Message, MessageSignal, UserRef
from salience.store.base import Store



async def update_person_model(
    store: Store,
    user: UserRef,
    messages: list[Message],
    new_memories: list[MemoryItem],
    flagged: Callable[[str], bool],
) -> None:
    """Resolve the entities the new memories mention, link them, and store one signal per
    user message of the job."""
    by_id = {m.id: m for m in messages}
    speakers = {m.name for m in messages if m.name}
    resolver = EntityResolver(user, await store.load_entities(user), skip_names=speakers)
    entity_ids: dict[str, list[str]] = {}
    for memory in new_memories:
        source = by_id.get(memory.sources[0]) if memory.sources else None
        by_user = source is None or source.role == "user"
        ids = resolver.link_memory(MemoryText(memory.id, memory.text, memory.speaker, by_user, memory.created_at))
        for source_id in memory.sources:
            entity_ids.setdefault(source_id, []).extend(i for i in ids if i not in entity_ids.get(source_id, []))
    known = list(resolver.entities.values())
    for message in messages:  # a turn that only asks ("how is my sis?") still touches the entity
        if message.role == "user":
            for entity in entities_in_query(message.content, known, speakers):
                entity_ids.setdefault(message.id, [])
                if entity.id not in entity_ids[message.id]:
                    entity_ids[message.id].append(entity.id)
    await store.save_entities(user, resolver.changed_entities(), resolver.links)
    await store.save_message_signals(user, message_signals(messages, entity_ids, flagged))


@dataclass
class PersonModel:
    """One user's entities and arc signals, as recall uses them."""

    version: int
    entities: list[Entity]
    signals: list[MessageSignal]
    # every signal added up by session (for the arc as of now); a model that caught up with a
    # few new signals starts from the tallies of the one before
    tallies: dict[str, SessionTally] | None = None
    _arcs: dict[float | None, Arc] = field(default_factory=dict)

    def arc(self, at: datetime | None = None) -> Arc:
        key = at.timestamp() if at else None
        if key not in self._arcs:
            if len(self._arcs) > 32:
                self._arcs.clear()
            if at is None:
                if self.tallies is None:
                    self.tallies = session_tallies(self.signals)
                self._arcs[key] = arc_of(self.tallies, self.entities)
            else:
                self._arcs[key] = compute_arc(self.signals, self.entities, at)
        return self._arcs[key]

    def linked_mask(self, query: str, rows: Mapping[str, int], count: int, speakers: set[str]) -> np.ndarray:
        """Which of ``count`` memories (``rows``: memory id -> row) are linked to an entity the
        turn refers to ("my sister" finds the memories that only say "Sarah"). Read through
        the links, never across every memory: a turn's cost follows its entities, not the set."""
        mask = np.zeros(count, dtype=bool)
        referred = entities_in_query(query, self.entities, speakers)
        linked = {memory_id for entity in referred for memory_id in entity.memory_ids}
        mask[[row for memory_id in linked if (row := rows.get(memory_id)) is not None]] = True
        return mask


class PersonCache:
    """Per-user person models, kept up to date with the store's version for the user.

    When the version moves, a cached model catches up with the message signals written since
    (``Store.message_signal_changes``: each signal carries the version that wrote it) and the
    entities, which are few, read again: the cost follows the turn, not the conversation. A
    signal count that does not add up (signals erased), too many written since, or no model yet
    loads the model whole: every entity and signal (~6 ms for 1,000 signals, ~19 ms for 3,000).
    A large model (``RELOAD_IN_BACKGROUND_FROM`` signals and entities or more) is then served as
    it was while one background task per user reloads it, at most one every ``RELOAD_SPACING``
    times as long as the last load took; smaller ones are loaded before answering. Erasure drops
    the user's model at once (``forget``).
    """

    RELOAD_IN_BACKGROUND_FROM = 200
    RELOAD_SPACING = 10.0
    CATCH_UP_LIMIT = 200  # signals written since the cached version; more: a full load

    def __init__(self, store: Store, max_users: int = 10_000) -> None:
        self.store = store
        self.max_users = max_users
        self._models: dict[UserRef, PersonModel] = {}
        self._reloads = SpacedTasks("person model reload", self.RELOAD_SPACING, max_users)
        self._generation: dict[UserRef, int] = {}  # moved by ``forget``: a load begun before is discarded
        # a request arriving while the refresh after a commit catches the model up waits for it
        self._catching_up: SharedRuns[PersonModel | None] = SharedRuns()

    async def get(self, user: UserRef, version: int) -> PersonModel:
        cached = self._models.get(user)
        if cached is not None and cached.version >= version:  # read at that version or later
            return cached
        if cached is not None:
            caught_up = await self._catching_up.run((user, cached.version), lambda: self._catch_up(user, cached))
            if caught_up is not None and caught_up.version < version:  # joined one that read before this version
                caught_up = await self._catching_up.run((user, caught_up.version), lambda model=caught_up: self._catch_up(user, model))
            if caught_up is not None:
                return caught_up
        if cached is not None and len(cached.signals) + len(cached.entities) >= self.RELOAD_IN_BACKGROUND_FROM:
            self._reloads.start(user, lambda: self._load(user, version))
            return cached
        return await self._load(user, version)

    async def _catch_up(self, user: UserRef, cached: PersonModel) -> PersonModel | None:
        """``cached`` with the signals written since its version; None when a full load is needed."""
        generation = self._generation.get(user, 0)
        changes = await self.store.message_signal_changes(user, cached.version, self.CATCH_UP_LIMIT)
        if changes.changed is None or changes.version < cached.version:
            return None
        fresh = {s.message_id: s for s in changes.changed}
        added = sorted(fresh.values(), key=_signal_order)
        # As a rule every signal read is a new message's: the store's count then says so (it is the
        # model's count plus the new ones only when none was erased or rewritten), and the model's
        # signals are not read one by one (a few thousand in a long conversation: 0.4 ms a turn).
        rewritten = len(cached.signals) + len(fresh) != changes.count
        if rewritten:
            signals = [s for s in cached.signals if s.message_id not in fresh]
            signals.extend(added)
        else:
            signals = [*cached.signals, *added]
        if len(signals) != changes.count:  # some were erased (or rewritten elsewhere): load whole
            return None
        in_order = not (len(signals) > len(fresh) and fresh and _signal_order(signals[-len(fresh)]) < _signal_order(signals[-len(fresh) - 1]))
        if not in_order:
            signals.sort(key=_signal_order)  # an older message's signal written late
        # new signals at the end: the sessions' tallies only add them (else they are counted anew)
        tallies = session_tallies(added, cached.tallies) if cached.tallies is not None and in_order and not rewritten else None
        model = PersonModel(changes.version, await self.store.load_entities(user), signals, tallies)
        if self._generation.get(user, 0) != generation:  # erased meanwhile
            return None
        self._keep(user, model)
        return model

    async def _load(self, user: UserRef, version: int) -> PersonModel:
        generation = self._generation.get(user, 0)
        model = PersonModel(version, await self.store.load_entities(user), await self.store.load_message_signals(user))
        if self._generation.get(user, 0) != generation:  # erased meanwhile: load again
            return await self._load(user, version)
        self._keep(user, model)
        return model

    def _keep(self, user: UserRef, model: PersonModel) -> None:
        current = self._models.get(user)
        if current is not None and current.version > model.version:
            return
        if current is None and len(self._models) >= self.max_users:
            self._models.pop(next(iter(self._models)))
        self._models[user] = model

    def forget(self, user: UserRef) -> None:
        """Drop the user's model now (erasure): nothing of an erased memory or message is served."""
        self._models.pop(user, None)
        self._generation[user] = self._generation.get(user, 0) + 1
        self._reloads.cancel(user)


def _signal_order(signal: MessageSignal) -> tuple[float, str]:
    return (signal.created_at.timestamp(), signal.message_id)
