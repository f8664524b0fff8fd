"""The Redis store's compliance half: erasure and export.

Part of ``RedisStore`` (redis.py): its connection, scripts and sealing helpers (``self._redis``,
``self._key``, ``self._seal``) are the store's own.
"""

from __future__ import annotations

import json
from datetime import datetime

from redis.exceptions import WatchError

from salience.model import (
    ErasureReceipt,
    Message,
    UserRef,
)
from salience.store.redis_codec import (
    GROUP,
    OUTBOX,
    QUEUE,
    _glob,
    _unavailable_on_connection_errors,
    user_prefix,
)
from salience.store.sqlite_schema import _message_from_json


class RedisCompliance:
    # -- compliance: erasure, export, audit -------------------------------------------------------
    @_unavailable_on_connection_errors
    async def user_exists(self, user: UserRef) -> bool:
        prefix = user_prefix(user)
        found = await self._redis.exists(f"{prefix}:sessions", f"{prefix}:mems", f"{prefix}:msgs", f"{prefix}:safety")
        return found > 0

    @_unavailable_on_connection_errors
    async def load_messages(self, user: UserRef, message_ids: list[str]) -> list[Message]:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return []
        rows = await self._redis.hmget(f"{user_prefix(user)}:msgs", ids)
        data_key = await self._key(user, create=False)
        return [self._unseal_message(data_key, user, _message_from_json(json.loads(row))) for row in rows if row]

    async def _scan(self, pattern: str) -> list[bytes]:
        return [key async for key in self._redis.scan_iter(match=pattern, count=1000)]

    async def _user_jobs(self, user: UserRef) -> list[tuple[str, dict[bytes, bytes]]]:
        """The user's job records on the queue. A scan: erasure is rare, and an index per user
        would be one more key to keep right on every enqueue."""
        found = []
        prefix = f"{QUEUE}:job:"
        for key in await self._scan(_glob(prefix) + "*"):
            record = await self._redis.hgetall(key)
            if record.get(b"tenant", b"").decode() == user.tenant and record.get(b"user", b"").decode() == user.user:
                found.append((key.decode().removeprefix(prefix), record))
        return found

    async def _drop_jobs(self, job_ids: list[str]) -> int:
        if not job_ids:
            return 0
        return int(await self._queue_drop(
            keys=[f"{QUEUE}:stream", f"{QUEUE}:delayed", f"{QUEUE}:pending"], args=[GROUP, f"{QUEUE}:job:", *job_ids]
        ))

    async def _erase_traces(self, user: UserRef, refs: set[str] | None) -> int:
        """Traces of the user holding any of ``refs`` (None: all of them)."""
        index = f"{user_prefix(user)}:traces"
        held = await self._redis.hgetall(index)
        doomed = [t.decode() for t, ids in held.items() if refs is None or refs & set(ids.decode().split())]
        if not doomed:
            return 0
        # One round trip for all of them: each trace, then its entries in the index and expiry
        # set. Pipelined, not a transaction: a trace's key is not on the user's Cluster slot.
        async with self._redis.pipeline(transaction=False) as pipe:
            for trace_id in doomed:
                pipe.delete(self._trace_key(user.tenant, trace_id))
            pipe.hdel(index, *doomed)
            pipe.zrem(f"{index}:expiry", *doomed)
            results = await pipe.execute()
        # Counted only where the trace was still there: an expired one was not erased now.
        return sum(int(deleted) for deleted in results[: len(doomed)])

    async def _forget_in_safety_record(self, user: UserRef, message_ids: set[str]) -> int:
        key = f"{user_prefix(user)}:safety"
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, "record")
                    if not raw:
                        return 0
                    record = json.loads(raw)
                    kept = [m for m in record.get("seen_message_ids", []) if m not in message_ids]
                    removed = len(record.get("seen_message_ids", [])) - len(kept)
                    if not removed:
                        return 0
                    record["seen_message_ids"] = kept
                    pipe.multi()
                    pipe.hset(key, "record", json.dumps(record))
                    await pipe.execute()
                    return removed
                except WatchError:
                    continue

    @_unavailable_on_connection_errors
    async def erase_memory(self, user: UserRef, memory_id: str, now: datetime) -> ErasureReceipt | None:
        prefix = user_prefix(user)
        raw_sources = await self._redis.hget(f"{prefix}:mem:{memory_id}", "src")
        if raw_sources is None:
            return None
        sources: list[str] = json.loads(raw_sources)
        # Jobs first: a queued job holding the source messages would extract the memory again.
        holding = []
        for job_id, record in await self._user_jobs(user):
            messages = json.loads(record.get(b"messages", b"[]"))
            if {m["id"] for m in messages} & set(sources):
                holding.append(job_id)
        deleted, had_embedding, messages_removed = await self._erase_memory(
            keys=[f"{prefix}:mem:{memory_id}", f"{prefix}:mems", f"{prefix}:meta", f"{prefix}:msgs", f"{prefix}:written"],
            args=[memory_id, *sources],
        )
        if not deleted:
            return None  # erased by someone else in between
        receipt = ErasureReceipt(user, now, memory_id)
        receipt.count("memories", 1)
        receipt.count("embeddings", had_embedding)
        receipt.count("messages", messages_removed)
        receipt.count("extraction_jobs", await self._drop_jobs(holding))
        receipt.count("traces", await self._erase_traces(user, {memory_id, *sources}))
        receipt.count("safety_references", await self._forget_in_safety_record(user, set(sources)))
        # Entities: its links, and any entity it was the last memory of. The arc: the signals
        # (mood, topics) of the messages it came from.
        links, entities = await self.unlink_memory(user, memory_id)
        receipt.count("entity_links", links)
        receipt.count("entities", entities)
        if sources:
            await self._redis.zrem(f"{prefix}:signals:written", *sources)
        receipt.count("message_signals", await self._redis.hdel(f"{prefix}:signals", *sources) if sources else 0)
        return receipt

    @_unavailable_on_connection_errors
    async def erase_user(self, user: UserRef, now: datetime) -> ErasureReceipt:
        receipt = ErasureReceipt(user, now)
        prefix = user_prefix(user)
        receipt.count("memories", await self._redis.zcard(f"{prefix}:mems"))
        receipt.count("messages", await self._redis.hlen(f"{prefix}:msgs"))
        receipt.count("sessions", await self._redis.zcard(f"{prefix}:sessions"))
        receipt.count("safety_records", await self._redis.exists(f"{prefix}:safety"))
        receipt.count("data_keys", await self._redis.exists(f"{prefix}:dek"))
        receipt.count("extraction_jobs", await self._drop_jobs([job_id for job_id, _ in await self._user_jobs(user)]))
        receipt.count("traces", await self._erase_traces(user, None))
        receipt.count("entities", await self._redis.hlen(f"{prefix}:entities"))
        receipt.count("message_signals", await self._redis.hlen(f"{prefix}:signals"))
        links = 0
        for key in await self._scan(_glob(prefix) + ":ent:*"):
            links += await self._redis.scard(key)
        receipt.count("entity_links", links)
        events = []
        for key in await self._scan(_glob(f"{OUTBOX}:event:") + "*"):
            record = await self._redis.hgetall(key)
            payload = json.loads(record.get(b"payload", b"{}"))
            if record.get(b"tenant", b"").decode() == user.tenant and payload.get("user") == user.user:
                events.append(key.decode().removeprefix(f"{OUTBOX}:event:"))
        dropped = 0
        if events:
            dropped = await self._outbox_drop(keys=[f"{OUTBOX}:due", f"{OUTBOX}:pending"], args=[f"{OUTBOX}:event:", *events])
        receipt.count("outbox_events", int(dropped))
        # Everything under the user's hash tag: memories, messages, sessions, safety, the data
        # key (crypto-shredding), done markers, the version.
        keys = await self._scan(_glob(prefix) + ":*")
        receipt.count("embeddings", sum([
            await self._redis.hexists(k, "emb") for k in keys if k.decode().startswith(f"{prefix}:mem:")
        ]))
        for start in range(0, len(keys), 500):
            await self._redis.delete(*keys[start:start + 500])
        return receipt
