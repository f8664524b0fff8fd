"""The shared store: Redis (or a Redis Cluster slot per user), for several proxy replicas.

Key layout (``docs/scaling.md`` has the measured sizes):

    salience:{t:u}:sessions        zset   session id -> last seen (unix s)
    salience:{t:u}:msgs            hash   message id -> JSON
    salience:{t:u}:mem:<id>        hash   one memory; ``emb`` holds float32 bytes
    salience:{t:u}:mems            zset   memory id -> insertion order
    salience:{t:u}:written         zset   memory id -> the version its last write made (caches
                                          read only what was written since the one they hold)
    salience:{t:u}:meta            hash   version (bumped on every memory change), seq
    salience:{t:u}:done:<job>      string a committed job (expires): commits apply once
    salience:{t:u}:safety          hash   record (SafetyRecord JSON), updated_at
    salience:{t:u}:entities        hash   entity id -> Entity JSON (aliases, relation, type)
    salience:{t:u}:ent:<eid>       set    memory ids linked to the entity
    salience:{t:u}:mement:<mid>    set    entity ids linked to the memory (erasure by memory id)
    salience:{t:u}:signals         hash   message id -> MessageSignal JSON (the arc's input)
    salience:{t:u}:signals:written zset   message id -> the version that wrote its signal
    salience:{queue}:stream        stream extraction jobs, consumer group ``workers``
    salience:{queue}:job:<id>      hash   the job: user, messages, status, attempts, entry
    salience:{queue}:delayed       zset   job id -> when a retried job is due again
    salience:{queue}:pending       hash   "tenant:user" -> jobs queued or leased; "*" -> all
    salience:{outbox}:event:<id>   hash   a webhook event: tenant, kind, payload, status, attempts,
                                          available_at, leased_until, last_error (expires once
                                          delivered or given up)
    salience:{outbox}:due          zset   event id -> when it may be claimed: available_at while
                                          queued, leased_until while leased
    salience:{outbox}:pending      hash   "t:<tenant>" -> events queued or leased; "*" -> all
    salience:tenant:<t>:trace:<id> string a debug trace (expires); sealed with the user's key
    salience:{t:u}:traces          hash   trace id -> the memory and message ids it holds (erasure)
    salience:{t:u}:traces:expiry   zset   trace id -> when its trace expires (prunes the index)
    salience:{t:u}:dek             hash   k: the user's data key, wrapped by the tenant master key
    salience:{audit:<t>}:log       list   the tenant's audit entries, JSON, in chain order
    salience:{audit:<t>}:head      hash   seq, hash of the last entry

Everything of one user shares the hash tag ``{tenant:user}``, so a user's writes are one
Lua script on one Cluster slot. The queue lives under its own tag ``{queue}``, the webhook
outbox under ``{outbox}`` (one place for the sender to claim from, whatever the tenant).

This module holds the connection, encryption, sessions, messages, memories and traces; the
person model, safety records, the outbox, the extraction queue, erasure and export, and the audit
chain are in ``redis_person``, ``redis_safety``, ``redis_outbox``, ``redis_queue``,
``redis_compliance`` and ``redis_audit``, mixed into the one ``RedisStore`` class; key names and
the encoding of memories as hashes in ``redis_codec``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from salience.model import (
    MemoryChanges,
    MemoryItem,
    Message,
    UserRef,
    new_id,
)
from salience.store import redis_queue_scripts as queue_scripts
from salience.store import redis_scripts as scripts
from salience.store.redis_person import RedisPersonModel
from salience.store.redis_safety import RedisSafety
from salience.store.redis_outbox import RedisOutbox
from salience.store.redis_queue import RedisQueue
from salience.store.redis_compliance import RedisCompliance
from salience.store.redis_audit import RedisAudit
from salience.store.base import FieldCipher, MasterKeyMissing, looks_sealed
from salience.store.redis_codec import (
    CONSUMER_IDLE_MS,
    GROUP,
    QUEUE,
    TRACE_TTL,
    _escape,
    _memory_from_hash,
    _unavailable_on_connection_errors,
    user_prefix,
)
from salience.store.sqlite_schema import _message_to_json


class RedisStore(RedisPersonModel, RedisSafety, RedisOutbox, RedisQueue, RedisCompliance, RedisAudit):
    def __init__(self, url: str, cipher: FieldCipher | None = None) -> None:
        self.url = url
        self.cipher = cipher
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._redis = aioredis.Redis.from_url(
            url,
            decode_responses=False,  # embeddings are bytes
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=15,
            # a short, bounded retry: a blip is absorbed, an outage is reported within a second
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._resolve_session = self._redis.register_script(scripts.RESOLVE_SESSION)
        self._commit = self._redis.register_script(scripts.COMMIT_EXTRACTION)
        self._enqueue = self._redis.register_script(queue_scripts.ENQUEUE)
        self._claim = self._redis.register_script(queue_scripts.CLAIM)
        self._finish = self._redis.register_script(queue_scripts.FINISH)
        self._retry = self._redis.register_script(queue_scripts.RETRY)
        self._delete_memory = self._redis.register_script(scripts.DELETE_MEMORY)
        self._memory_changes = self._redis.register_script(scripts.MEMORY_CHANGES)
        self._index_trace = self._redis.register_script(scripts.INDEX_TRACE)
        self._save_signals = self._redis.register_script(scripts.SAVE_SIGNALS)
        self._signal_changes = self._redis.register_script(scripts.SIGNAL_CHANGES)
        self._save_safety = self._redis.register_script(scripts.SAVE_SAFETY)
        self._unlink_memory = self._redis.register_script(scripts.UNLINK_MEMORY)
        self._bump_version = self._redis.register_script(scripts.BUMP_VERSION)
        self._outbox_enqueue = self._redis.register_script(queue_scripts.OUTBOX_ENQUEUE)
        self._outbox_claim = self._redis.register_script(queue_scripts.OUTBOX_CLAIM)
        self._outbox_ack = self._redis.register_script(queue_scripts.OUTBOX_ACK)
        self._outbox_retry = self._redis.register_script(queue_scripts.OUTBOX_RETRY)
        self._erase_memory = self._redis.register_script(scripts.ERASE_MEMORY)
        self._queue_drop = self._redis.register_script(queue_scripts.QUEUE_DROP)
        self._outbox_drop = self._redis.register_script(queue_scripts.OUTBOX_DROP)

    # -- encryption at rest: every text field through the user's data key ----------------------
    async def _key(self, user: UserRef, create: bool) -> bytes | None:
        """The user's data key. Not cached: another replica may erase the user at any time."""
        if self.cipher is None or not self.cipher.encrypts(user.tenant):
            return None
        key = f"{user_prefix(user)}:dek"
        wrapped = await self._redis.hget(key, "k")
        if wrapped is None:
            if not create:
                return None
            await self._redis.hsetnx(key, "k", self.cipher.new_wrapped_key(user.tenant))
            wrapped = await self._redis.hget(key, "k")  # another replica may have won the race
        return self.cipher.unwrap(user.tenant, wrapped)

    def _seal(self, key: bytes | None, user: UserRef, text: str | None, field: str) -> str | None:
        if key is None or text is None or self.cipher is None:
            return text
        return self.cipher.seal(key, text, f"{user.tenant}\x1f{user.user}\x1f{field}")

    def _unseal(self, key: bytes | None, user: UserRef, text: str | None, field: str) -> str | None:
        if text is None or not looks_sealed(text):
            return text  # written in clear (a tenant without a master key)
        if key is None or self.cipher is None:
            raise MasterKeyMissing(user.tenant)
        return self.cipher.open(key, text, f"{user.tenant}\x1f{user.user}\x1f{field}")

    def _seal_memory(self, key: bytes | None, user: UserRef, item: MemoryItem) -> MemoryItem:
        return replace(item, text=self._seal(key, user, item.text, "memory"), speaker=self._seal(key, user, item.speaker, "speaker"))

    def _unseal_memory(self, key: bytes | None, user: UserRef, item: MemoryItem) -> MemoryItem:
        return replace(item, text=self._unseal(key, user, item.text, "memory"), speaker=self._unseal(key, user, item.speaker, "speaker"))

    def _seal_message(self, key: bytes | None, user: UserRef, message: Message) -> Message:
        return replace(message, content=self._seal(key, user, message.content, "message"), name=self._seal(key, user, message.name, "name"))

    def _unseal_message(self, key: bytes | None, user: UserRef, message: Message) -> Message:
        return replace(message, content=self._unseal(key, user, message.content, "message"), name=self._unseal(key, user, message.name, "name"))

    @_unavailable_on_connection_errors
    async def open(self) -> None:
        stream = f"{QUEUE}:stream"
        try:
            await self._redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        # Every process start is a new consumer; forget the ones that left nothing leased.
        for consumer in await self._redis.xinfo_consumers(stream, GROUP):
            if consumer["pending"] == 0 and consumer["idle"] > CONSUMER_IDLE_MS:
                await self._redis.xgroup_delconsumer(stream, GROUP, consumer["name"])

    async def close(self) -> None:
        await self._redis.aclose()

    # -- sessions and messages --------------------------------------------------------------
    @_unavailable_on_connection_errors
    async def resolve_session(
        self, user: UserRef, requested: str | None, now: datetime, inactivity_gap: timedelta
    ) -> str:
        session = await self._resolve_session(
            keys=[f"{user_prefix(user)}:sessions"],
            args=[requested or "", repr(now.timestamp()), repr(inactivity_gap.total_seconds()), new_id("sess")],
        )
        return session.decode()

    @_unavailable_on_connection_errors
    async def add_messages(self, user: UserRef, messages: list[Message]) -> None:
        key = f"{user_prefix(user)}:msgs"
        data_key = await self._key(user, create=True)
        async with self._redis.pipeline(transaction=True) as tx:
            for message in messages:
                tx.hsetnx(key, message.id, json.dumps(_message_to_json(self._seal_message(data_key, user, message))))
            await tx.execute()

    # -- memories ---------------------------------------------------------------------------
    async def _read_memories(self, user: UserRef, ids: list[bytes], with_embedding: bool) -> list[MemoryItem]:
        prefix = user_prefix(user)
        async with self._redis.pipeline(transaction=False) as pipe:
            for memory_id in ids:
                pipe.hgetall(f"{prefix}:mem:{memory_id.decode()}")
            rows = await pipe.execute()
        data_key = await self._key(user, create=False)
        return [
            self._unseal_memory(data_key, user, _memory_from_hash(memory_id.decode(), row, with_embedding))
            for memory_id, row in zip(ids, rows)
            if row
        ]

    @_unavailable_on_connection_errors
    async def load_memories(self, user: UserRef) -> list[MemoryItem]:
        ids = await self._redis.zrange(f"{user_prefix(user)}:mems", 0, -1)
        return await self._read_memories(user, ids, with_embedding=True)

    @_unavailable_on_connection_errors
    async def get_memory(self, user: UserRef, memory_id: str) -> MemoryItem | None:
        row = await self._redis.hgetall(f"{user_prefix(user)}:mem:{memory_id}")
        if not row:
            return None
        return self._unseal_memory(await self._key(user, create=False), user, _memory_from_hash(memory_id, row, with_embedding=False))

    @_unavailable_on_connection_errors
    async def list_memories(
        self, user: UserRef, limit: int, after: str | None = None
    ) -> tuple[list[MemoryItem], bool]:
        order = f"{user_prefix(user)}:mems"
        start = 0
        if after:
            rank = await self._redis.zrank(order, after)
            start = rank + 1 if rank is not None else 0
        ids = await self._redis.zrange(order, start, start + limit)  # one more than asked: are there more?
        items = await self._read_memories(user, ids[:limit], with_embedding=False)
        return items, len(ids) > limit

    @_unavailable_on_connection_errors
    async def existing_memory_ids(self, user: UserRef, memory_ids: list[str]) -> set[str]:
        if not memory_ids:
            return set()
        scores = await self._redis.zmscore(f"{user_prefix(user)}:mems", memory_ids)
        return {memory_id for memory_id, score in zip(memory_ids, scores) if score is not None}

    @_unavailable_on_connection_errors
    async def memory_version(self, user: UserRef) -> int:
        version = await self._redis.hget(f"{user_prefix(user)}:meta", "version")
        return int(version) if version else 0

    @_unavailable_on_connection_errors
    async def memory_changes(self, user: UserRef, since: int, limit: int) -> MemoryChanges:
        prefix = user_prefix(user)
        version, count, rows = await self._memory_changes(
            keys=[f"{prefix}:meta", f"{prefix}:mems", f"{prefix}:written"], args=[since, limit, f"{prefix}:mem:"]
        )
        if rows == -1:
            return MemoryChanges(int(version), int(count), None)
        data_key = await self._key(user, create=False) if rows else None
        rows = sorted(rows, key=lambda row: float(row[1]))  # load order: the ``mems`` score
        changed = [
            self._unseal_memory(
                data_key, user, _memory_from_hash(memory_id.decode(), dict(zip(fields[::2], fields[1::2])), True)
            )
            for memory_id, _, fields in rows
        ]
        return MemoryChanges(int(version), int(count), changed)

    @_unavailable_on_connection_errors
    async def delete_memory(self, user: UserRef, memory_id: str) -> bool:
        prefix = user_prefix(user)
        deleted = await self._delete_memory(
            keys=[f"{prefix}:mem:{memory_id}", f"{prefix}:mems", f"{prefix}:meta", f"{prefix}:written"], args=[memory_id]
        )
        if deleted == 1:
            await self.unlink_memory(user, memory_id)
        return deleted == 1


    # -- traces ---------------------------------------------------------------------------------
    async def prune_finished(self, now: datetime, limit: int) -> int:
        """Nothing to do: traces, finished jobs and events are written with their expiry."""
        return 0

    @staticmethod
    def _trace_key(tenant: str, trace_id: str) -> str:
        return f"salience:tenant:{_escape(tenant)}:trace:{trace_id}"

    @_unavailable_on_connection_errors
    async def save_trace(
        self, tenant: str, trace_id: str, payload: dict[str, Any], now: datetime, refs: list[str] | None = None
    ) -> None:
        user_id = payload.get("user")
        if user_id is None:
            await self._redis.set(self._trace_key(tenant, trace_id), json.dumps(payload), ex=TRACE_TTL)
            return
        user = UserRef(tenant, user_id)
        sealed = self._seal(await self._key(user, create=True), user, json.dumps(payload), "trace")
        # The owner is stored beside the trace so it can be opened with the right key; the
        # user's index says which traces hold which ids, for erasure (INDEX_TRACE, on the user's
        # Cluster slot: the trace's own key is not under the user's hash tag, so it is set apart).
        await self._redis.set(self._trace_key(tenant, trace_id), json.dumps({"u": user_id, "p": sealed}), ex=TRACE_TTL)
        await self._index_trace(
            keys=[f"{user_prefix(user)}:traces", f"{user_prefix(user)}:traces:expiry"],
            args=[trace_id, " ".join(refs or []), time.time(), TRACE_TTL],
        )

    @_unavailable_on_connection_errors
    async def get_trace(self, tenant: str, trace_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self._trace_key(tenant, trace_id))
        if not raw:
            return None
        data = json.loads(raw)
        if set(data) != {"u", "p"}:
            return data
        user = UserRef(tenant, data["u"])
        return json.loads(self._unseal(await self._key(user, create=False), user, data["p"], "trace"))  # type: ignore[arg-type]


