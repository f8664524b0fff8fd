"""The Redis store's person model: entities, their links to memories, and message signals.

Part of ``RedisStore`` (redis.py): its connection, scripts and sealing helpers (``self._redis``,
``self._key``, ``self._seal``) are the store's own.
"""

from __future__ import annotations

import json

from redis.exceptions import WatchError

from salience.model import (
    Entity,
    MessageSignal,
    SignalChanges,
    UserRef,
)
from salience.store.redis_codec import (
    _unavailable_on_connection_errors,
    user_prefix,
)


class RedisPersonModel:
    # -- the person model: entities and message signals -----------------------------------------
    @_unavailable_on_connection_errors
    async def unlink_memory(self, user: UserRef, memory_id: str) -> tuple[int, int]:
        """Drop the memory's entity links and every entity left without a memory: (links, entities)."""
        prefix = user_prefix(user)
        entity_ids = sorted(m.decode() for m in await self._redis.smembers(f"{prefix}:mement:{memory_id}"))
        gone = await self._unlink_memory(
            keys=[f"{prefix}:mement:{memory_id}", f"{prefix}:entities", f"{prefix}:meta",
                  *(f"{prefix}:ent:{e}" for e in entity_ids)],
            args=[memory_id, *entity_ids],
        )
        return len(entity_ids), int(gone)

    @_unavailable_on_connection_errors
    async def save_entities(self, user: UserRef, entities: list[Entity], links: list[tuple[str, str]]) -> None:
        if not entities and not links:
            return
        prefix = user_prefix(user)
        key = f"{prefix}:entities"
        data_key = await self._key(user, create=True)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:  # optimistic: the aliases are a union with what another worker just saved
                try:
                    await pipe.watch(key)
                    stored = await pipe.hmget(key, [e.id for e in entities]) if entities else []
                    pipe.multi()
                    for entity, raw in zip(entities, stored):
                        doc = entity.to_json()
                        if raw:
                            stored = json.loads(self._unseal(data_key, user, raw.decode(), "entity") or "{}")
                            doc["aliases"] = list(dict.fromkeys([*stored.get("aliases", []), *entity.aliases]))
                        pipe.hset(key, entity.id, self._seal(data_key, user, json.dumps(doc), "entity"))
                    for entity_id, memory_id in links:
                        pipe.sadd(f"{prefix}:ent:{entity_id}", memory_id)
                        pipe.sadd(f"{prefix}:mement:{memory_id}", entity_id)
                    await self._bump_version(keys=[f"{prefix}:meta"], client=pipe)
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    @_unavailable_on_connection_errors
    async def load_entities(self, user: UserRef) -> list[Entity]:
        prefix = user_prefix(user)
        docs = await self._redis.hgetall(f"{prefix}:entities")
        data_key = await self._key(user, create=False) if docs else None
        ids = [entity_id.decode() for entity_id in docs]
        async with self._redis.pipeline(transaction=False) as pipe:
            for entity_id in ids:
                pipe.smembers(f"{prefix}:ent:{entity_id}")
            members = await pipe.execute()
        entities = [
            Entity.from_json(
                json.loads(self._unseal(data_key, user, docs[entity_id.encode()].decode(), "entity") or "{}"),
                sorted(m.decode() for m in linked),
            )
            for entity_id, linked in zip(ids, members)
        ]
        return sorted(entities, key=lambda e: (e.first_seen.timestamp() if e.first_seen else 0.0, e.id))

    @_unavailable_on_connection_errors
    async def save_message_signals(self, user: UserRef, signals: list[MessageSignal]) -> None:
        if not signals:
            return
        prefix = user_prefix(user)
        data_key = await self._key(user, create=True)
        pairs = [v for s in signals for v in (s.message_id, self._seal(data_key, user, json.dumps(s.to_json()), "signal"))]
        await self._save_signals(keys=[f"{prefix}:meta", f"{prefix}:signals", f"{prefix}:signals:written"], args=pairs)

    @_unavailable_on_connection_errors
    async def load_message_signals(self, user: UserRef) -> list[MessageSignal]:
        raw = await self._redis.hvals(f"{user_prefix(user)}:signals")
        signals = await self._signals_of(user, raw)
        return sorted(signals, key=lambda s: (s.created_at, s.message_id))

    @_unavailable_on_connection_errors
    async def message_signal_changes(self, user: UserRef, since: int, limit: int) -> SignalChanges:
        prefix = user_prefix(user)
        version, count, changed = await self._signal_changes(
            keys=[f"{prefix}:meta", f"{prefix}:signals", f"{prefix}:signals:written"], args=[since, limit]
        )
        signals = None if changed == -1 else await self._signals_of(user, changed)
        return SignalChanges(int(version), int(count), signals)

    async def _signals_of(self, user: UserRef, raw: list[bytes]) -> list[MessageSignal]:
        data_key = await self._key(user, create=False) if raw else None
        return [MessageSignal.from_json(json.loads(self._unseal(data_key, user, v.decode(), "signal") or "{}")) for v in raw]
