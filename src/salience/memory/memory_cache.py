"""The per-process cache of users' memory sets, kept up to date with the store's version for
each user: as a rule by catching up with what changed, in full only when that is not possible.
"""

from __future__ import annotations

import asyncio
import gc

from salience.background import SharedRuns, SpacedTasks
from salience.memory.memory_set import MemorySet
from salience.model import UserRef
from salience.store.base import Store


class MemoryCache:
    """Per-user memory sets, kept up to date with the store's version for the user.

    Extraction moves the version after nearly every turn. A cached set is brought up to date
    with what was written since its version (``Store.memory_changes``): for a user with 10k
    memories, a turn's few new and reinforced memories cost a few milliseconds (one store round
    trip, the new rows appended to the arrays and to the BM25 index's term counts), so this is done
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

    def __init__(
        self, store: Store, max_users: int = 10_000, serve_stale: bool = True, lexical: bool = True, quantized: bool = False
    ) -> None:
        """``serve_stale``: False for a reader that must see every memory (the extraction worker
        consolidates against them): a set is then always brought up to date before it is returned.
        ``lexical``: False for a reader that never scores a query (no BM25 index, see ``MemorySet``).
        ``quantized``: embeddings kept as int8 (recall's sets: a quarter of the memory, and faster
        to score; see ``rows.Rows``)."""
        self.store = store
        self.max_users = max_users
        self.serve_stale = serve_stale
        self.lexical = lexical
        self.quantized = quantized
        self._sets: dict[UserRef, MemorySet] = {}
        self._rebuilds = SpacedTasks("memory set rebuild", self.REBUILD_SPACING, max_users)
        self._generation: dict[UserRef, int] = {}  # moved by ``forget``: a build begun before is discarded
        self._catching_up: SharedRuns[MemorySet | None] = SharedRuns()
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
        same one rather than each doing the work. The set is kept before the run ends: a request
        that looks once it has ended finds it current instead of catching up once more."""
        return await self._catching_up.run((user, cached.version), lambda: self._caught_up_and_kept(user, cached))

    async def _caught_up_and_kept(self, user: UserRef, cached: MemorySet) -> MemorySet | None:
        generation = self._generation.get(user, 0)
        caught_up = await self._catch_up(user, cached)
        if caught_up is not None and self._generation.get(user, 0) == generation:
            self._keep(user, caught_up)
        return caught_up

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
        memory_set = await asyncio.to_thread(MemorySet, version, items, pinned, previous, unranked, self.lexical, self.quantized)
        if self._generation.get(user, 0) != generation:  # erased meanwhile: load again
            return await self._build(user, await self.store.memory_version(user))
        self._keep(user, memory_set)
        # A set lives as long as its user talks: its objects (several per memory) are moved out
        # of the garbage collector's full collections, which walk every object alive. With the
        # benchmark's 10k and 100k users cached, one took 200-600 ms in the serving process, freed
        # nothing, and held every reply meanwhile. (What is garbage at this moment is kept too:
        # a full build is rare, once per user and process as a rule.)
        gc.freeze()
        return memory_set

    def forget(self, user: UserRef) -> None:
        """Drop the user's arrays now (erasure), not at the next version check; a rebuild that
        was already loading them is discarded when it finishes."""
        self._sets.pop(user, None)
        self._generation[user] = self._generation.get(user, 0) + 1
        self._rebuilds.cancel(user)

