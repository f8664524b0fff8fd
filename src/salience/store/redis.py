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
    salience:{t:u}:dek             hash   k: the user's data key, wrapped by the tenant master key
    salience:{audit:<t>}:log       list   the tenant's audit entries, JSON, in chain order
    salience:{audit:<t>}:head      hash   seq, hash of the last entry

Everything of one user shares the hash tag ``{tenant:user}``, so a user's writes are one
Lua script on one Cluster slot. The queue lives under its own tag ``{queue}``, the webhook
outbox under ``{outbox}`` (one place for the sender to claim from, whatever the tenant).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, ParamSpec, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError
from redis.retry import Retry

from salience.model import (
    GENESIS_HASH,
    AuditDraft,
    AuditEntry,
    Entity,
    ErasureReceipt,
    ExtractionJob,
    MemoryChanges,
    MemoryItem,
    Message,
    MessageSignal,
    OutboxEvent,
    SafetyRecord,
    UserRef,
    chain_entry,
    new_id,
)
from salience.store import redis_scripts as scripts
from salience.store.base import FieldCipher, MasterKeyMissing, StoreUnavailable, looks_sealed
from salience.store.sqlite_schema import _message_from_json, _message_to_json

P = ParamSpec("P")
T = TypeVar("T")

GROUP = "workers"
DONE_TTL = int(timedelta(days=7).total_seconds())  # how long a job id stays "seen" for idempotency
FAILED_TTL = int(timedelta(days=30).total_seconds())  # a given-up job stays for inspection
TRACE_TTL = int(timedelta(days=7).total_seconds())
QUEUE = "salience:{queue}"
OUTBOX = "salience:{outbox}"
CONSUMER_IDLE_MS = 3_600_000


def _escape(part: str) -> str:
    # Braces would end the hash tag early and ':' separates tenant from user.
    return part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D").replace(":", "%3A")


def user_prefix(user: UserRef) -> str:
    return f"salience:{{{_escape(user.tenant)}:{_escape(user.user)}}}"


def _unavailable_on_connection_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Redis being down surfaces as ``StoreUnavailable``, which the request path degrades on."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    return wrapper


def _float(value: bytes | None) -> float | None:
    return float(value) if value not in (None, b"") else None


def _dt(value: bytes | None) -> datetime | None:
    seconds = _float(value)
    return datetime.fromtimestamp(seconds, timezone.utc) if seconds is not None else None


def _memory_fields(item: MemoryItem) -> list[Any]:
    fields: list[Any] = [
        "text", item.text, "kind", item.kind, "imp", repr(float(item.importance)), "spk", item.speaker,
        "at", repr(item.created_at.timestamp()),
        "rat", repr(item.last_reinforced_at.timestamp()) if item.last_reinforced_at else "",
        "n", item.mention_count, "pin", int(item.pinned), "src", json.dumps(item.sources),
        "sess", item.session_id or "",
    ]
    if item.embedding is not None:
        fields += ["emb", item.embedding.astype(np.float32).tobytes()]
    return fields


def _reinforcement_fields(item: MemoryItem) -> list[Any]:
    return [
        "n", item.mention_count, "src", json.dumps(item.sources), "imp", repr(float(item.importance)),
        "rat", repr(item.last_reinforced_at.timestamp()) if item.last_reinforced_at else "",
    ]


def _memory_from_hash(memory_id: str, data: dict[bytes, bytes], with_embedding: bool) -> MemoryItem:
    embedding = None
    if with_embedding and data.get(b"emb"):
        embedding = np.frombuffer(data[b"emb"], dtype=np.float32)
    return MemoryItem(
        id=memory_id,
        text=data[b"text"].decode(),
        kind=data[b"kind"].decode(),  # type: ignore[arg-type]
        importance=float(data[b"imp"]),
        speaker=data[b"spk"].decode(),
        created_at=_dt(data[b"at"]),  # type: ignore[arg-type]
        last_reinforced_at=_dt(data.get(b"rat")),
        mention_count=int(data[b"n"]),
        pinned=data.get(b"pin") == b"1",
        sources=json.loads(data[b"src"]),
        session_id=data[b"sess"].decode() or None,
        embedding=embedding,
    )


class RedisStore:
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
        self._enqueue = self._redis.register_script(scripts.ENQUEUE)
        self._claim = self._redis.register_script(scripts.CLAIM)
        self._finish = self._redis.register_script(scripts.FINISH)
        self._retry = self._redis.register_script(scripts.RETRY)
        self._delete_memory = self._redis.register_script(scripts.DELETE_MEMORY)
        self._memory_changes = self._redis.register_script(scripts.MEMORY_CHANGES)
        self._save_safety = self._redis.register_script(scripts.SAVE_SAFETY)
        self._unlink_memory = self._redis.register_script(scripts.UNLINK_MEMORY)
        self._bump_version = self._redis.register_script(scripts.BUMP_VERSION)
        self._outbox_enqueue = self._redis.register_script(scripts.OUTBOX_ENQUEUE)
        self._outbox_claim = self._redis.register_script(scripts.OUTBOX_CLAIM)
        self._outbox_ack = self._redis.register_script(scripts.OUTBOX_ACK)
        self._outbox_retry = self._redis.register_script(scripts.OUTBOX_RETRY)
        self._erase_memory = self._redis.register_script(scripts.ERASE_MEMORY)
        self._queue_drop = self._redis.register_script(scripts.QUEUE_DROP)
        self._outbox_drop = self._redis.register_script(scripts.OUTBOX_DROP)

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
        async with self._redis.pipeline(transaction=True) as tx:
            tx.hset(f"{prefix}:signals", mapping={
                s.message_id: self._seal(data_key, user, json.dumps(s.to_json()), "signal") for s in signals
            })
            await self._bump_version(keys=[f"{prefix}:meta"], client=tx)
            await tx.execute()

    @_unavailable_on_connection_errors
    async def load_message_signals(self, user: UserRef) -> list[MessageSignal]:
        raw = await self._redis.hvals(f"{user_prefix(user)}:signals")
        data_key = await self._key(user, create=False) if raw else None
        signals = [MessageSignal.from_json(json.loads(self._unseal(data_key, user, v.decode(), "signal") or "{}")) for v in raw]
        return sorted(signals, key=lambda s: (s.created_at, s.message_id))

    # -- safety ---------------------------------------------------------------------------------
    @_unavailable_on_connection_errors
    async def get_safety_record(self, user: UserRef) -> SafetyRecord | None:
        raw = await self._redis.hget(f"{user_prefix(user)}:safety", "record")
        return SafetyRecord.from_json(json.loads(raw)) if raw else None

    @_unavailable_on_connection_errors
    async def save_safety_update(
        self, user: UserRef, record: SafetyRecord, pinned: list[MemoryItem], events: list[OutboxEvent], now: datetime
    ) -> None:
        # The outbox is on its own slot, so this is two atomic steps, and the order matters.
        # 1. the events, each a no-op if its id was queued before. Event ids are derived from
        # the user, the episode and the severity, so a retry after a failure below queues nothing
        # twice. The other order could lose an escalation: a record saying "escalated" whose
        # event never reached the outbox would never be sent, nor created again.
        if events:
            await self._enqueue_events(events, now)
        # 2. the user's side, atomically: the record, the pinned memories, the version.
        prefix = user_prefix(user)
        data_key = await self._key(user, create=True) if pinned else None
        args: list[Any] = [json.dumps(record.to_json()), repr(now.timestamp()), len(pinned)]
        for item in pinned:
            fields = _memory_fields(self._seal_memory(data_key, user, item))
            args += [item.id, len(fields), *fields]
        await self._save_safety(
            keys=[f"{prefix}:safety", f"{prefix}:mems", f"{prefix}:meta", f"{prefix}:written",
                  *(f"{prefix}:mem:{m.id}" for m in pinned)],
            args=args,
        )

    # -- the outbox: webhook deliveries -----------------------------------------------------------
    async def _enqueue_events(self, events: list[OutboxEvent], now: datetime) -> int:
        args: list[Any] = [repr(now.timestamp())]
        for event in events:
            args += [event.id, event.tenant, event.kind, json.dumps(event.payload), repr(event.created_at.timestamp())]
        added = await self._outbox_enqueue(
            keys=[f"{OUTBOX}:due", f"{OUTBOX}:pending", *(f"{OUTBOX}:event:{e.id}" for e in events)], args=args
        )
        return int(added)

    @_unavailable_on_connection_errors
    async def enqueue_outbox(self, event: OutboxEvent, now: datetime) -> bool:
        return await self._enqueue_events([event], now) == 1

    @_unavailable_on_connection_errors
    async def claim_outbox(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEvent]:
        # Leases are scores in the ``due`` zset on the caller's clock, as in SQLite: no
        # server-side idle time to reconcile (unlike the queue's XAUTOCLAIM).
        rows = await self._outbox_claim(
            keys=[f"{OUTBOX}:due"],
            args=[repr(now.timestamp()), limit, repr((now + lease).timestamp()), f"{OUTBOX}:event:"],
        )
        return [
            OutboxEvent(
                id=event_id.decode(), tenant=tenant.decode(), kind=kind.decode(), payload=json.loads(payload),
                created_at=_dt(created_at), attempts=int(attempts),  # type: ignore[arg-type]
            )
            for event_id, tenant, kind, payload, created_at, attempts in rows
        ]

    @_unavailable_on_connection_errors
    async def ack_outbox(self, event_id: str, now: datetime) -> None:
        await self._outbox_ack(
            keys=[f"{OUTBOX}:event:{event_id}", f"{OUTBOX}:due", f"{OUTBOX}:pending"],
            args=[event_id, repr(now.timestamp()), DONE_TTL],
        )

    @_unavailable_on_connection_errors
    async def retry_outbox(self, event_id: str, error: str, available_at: datetime | None) -> None:
        await self._outbox_retry(
            keys=[f"{OUTBOX}:event:{event_id}", f"{OUTBOX}:due", f"{OUTBOX}:pending"],
            args=[event_id, error[:500], repr(available_at.timestamp()) if available_at else "", FAILED_TTL],
        )

    @_unavailable_on_connection_errors
    async def pending_outbox(self, tenant: str | None = None) -> int:
        count = await self._redis.hget(f"{OUTBOX}:pending", "*" if tenant is None else f"t:{tenant}")
        return int(count) if count else 0

    # -- the extraction queue -----------------------------------------------------------------
    @_unavailable_on_connection_errors
    async def enqueue_extraction(self, job: ExtractionJob, now: datetime) -> bool:
        data_key = await self._key(job.user, create=True)
        added = await self._enqueue(
            keys=[f"{QUEUE}:job:{job.id}", f"{QUEUE}:stream", f"{QUEUE}:pending"],
            args=[
                job.id, job.user.tenant, job.user.user, job.session_id,
                json.dumps([_message_to_json(self._seal_message(data_key, job.user, m)) for m in job.messages]),
                repr(now.timestamp()),
            ],
        )
        return added == 1

    @_unavailable_on_connection_errors
    async def claim_extraction_jobs(self, limit: int, now: datetime, lease: timedelta) -> list[ExtractionJob]:
        # XAUTOCLAIM measures idleness on the server's clock; ``now`` may run ahead of the wall
        # clock (tests, or a caller that looks ahead), and that lead shortens the idle time needed.
        lead = now - datetime.now(timezone.utc)
        min_idle_ms = max(0, int((lease - lead).total_seconds() * 1000))
        keys = [f"{QUEUE}:stream", f"{QUEUE}:delayed"]
        args = [GROUP, self.consumer, repr(now.timestamp()), min_idle_ms, limit, f"{QUEUE}:job:",
                repr((now + lease).timestamp())]
        try:
            rows = await self._claim(keys=keys, args=args)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.open()  # Redis was down at start-up, or its data was wiped: set the queue up
            rows = await self._claim(keys=keys, args=args)
        jobs = []
        for job_id, attempts, tenant, user, session, messages in rows:
            owner = UserRef(tenant.decode(), user.decode())
            data_key = await self._key(owner, create=False)
            jobs.append(
                ExtractionJob(
                    id=job_id.decode(),
                    user=owner,
                    session_id=session.decode(),
                    messages=[self._unseal_message(data_key, owner, _message_from_json(m)) for m in json.loads(messages)],
                    attempts=int(attempts),
                )
            )
        return jobs

    @_unavailable_on_connection_errors
    async def commit_extraction(
        self, job: ExtractionJob, added: list[MemoryItem], reinforced: list[MemoryItem]
    ) -> None:
        if job.attempts > 0 and not await self._redis.exists(f"{QUEUE}:job:{job.id}"):
            return  # a claimed job whose record is gone: erased while it was being processed
        prefix = user_prefix(job.user)
        data_key = await self._key(job.user, create=True)
        args: list[Any] = [DONE_TTL, "", len(job.messages)]
        for message in job.messages:
            args += [message.id, json.dumps(_message_to_json(self._seal_message(data_key, job.user, message)))]
        args.append(len(added))
        for item in added:
            fields = _memory_fields(self._seal_memory(data_key, job.user, item))
            args += [item.id, len(fields), *fields]
        args.append(len(reinforced))
        for item in reinforced:
            fields = _reinforcement_fields(item)
            args += [item.id, len(fields), *fields]
        # 1. the user's side, atomically: memories, messages, version, "this job is done"
        await self._commit(
            keys=[
                f"{prefix}:done:{job.id}", f"{prefix}:msgs", f"{prefix}:mems", f"{prefix}:meta", f"{prefix}:written",
                *(f"{prefix}:mem:{item.id}" for item in [*added, *reinforced]),
            ],
            args=args,
        )
        # 2. the queue's side: acknowledge. A crash between 1 and 2 redelivers the job, and the
        # done marker makes its second commit a no-op before this step runs again.
        await self._finish(
            keys=[f"{QUEUE}:job:{job.id}", f"{QUEUE}:stream", f"{QUEUE}:delayed", f"{QUEUE}:pending"],
            args=[GROUP, DONE_TTL, job.id],
        )

    @_unavailable_on_connection_errors
    async def retry_extraction(self, job_id: str, error: str, available_at: datetime | None) -> None:
        await self._retry(
            keys=[f"{QUEUE}:job:{job_id}", f"{QUEUE}:stream", f"{QUEUE}:delayed", f"{QUEUE}:pending"],
            args=[GROUP, error[:500], repr(available_at.timestamp()) if available_at else "", job_id, FAILED_TTL],
        )

    @_unavailable_on_connection_errors
    async def pending_extractions(self, user: UserRef | None = None) -> int:
        field = "*" if user is None else f"{user.tenant}:{user.user}"
        count = await self._redis.hget(f"{QUEUE}:pending", field)
        return int(count) if count else 0

    # -- traces ---------------------------------------------------------------------------------
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
        # user's index says which traces hold which ids, for erasure.
        await self._redis.set(self._trace_key(tenant, trace_id), json.dumps({"u": user_id, "p": sealed}), ex=TRACE_TTL)
        await self._redis.hset(f"{user_prefix(user)}:traces", trace_id, " ".join(refs or []))

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
        for trace_id in doomed:
            await self._redis.delete(self._trace_key(user.tenant, trace_id))
            await self._redis.hdel(index, trace_id)
        return len(doomed)

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

    # -- the audit chain ---------------------------------------------------------------------------
    @staticmethod
    def _audit_keys(tenant: str) -> tuple[str, str]:
        tag = f"salience:{{audit:{_escape(tenant)}}}"
        return f"{tag}:log", f"{tag}:head"

    @_unavailable_on_connection_errors
    async def append_audit(self, tenant: str, drafts: list[AuditDraft], now: datetime) -> list[AuditEntry]:
        log_key, head_key = self._audit_keys(tenant)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:  # optimistic: another replica appending in between retries the chaining
                try:
                    await pipe.watch(head_key)
                    seq_raw, prev_raw = await pipe.hmget(head_key, "seq", "hash")
                    seq = int(seq_raw) if seq_raw else 0
                    prev = prev_raw.decode() if prev_raw else GENESIS_HASH
                    entries = []
                    for draft in drafts:
                        seq += 1
                        entry = chain_entry(draft, seq, prev, now)
                        entries.append(entry)
                        prev = entry.hash
                    pipe.multi()
                    if entries:
                        pipe.rpush(log_key, *(json.dumps(e.to_json()) for e in entries))
                        pipe.hset(head_key, mapping={"seq": seq, "hash": prev})
                    await pipe.execute()
                    return entries
                except WatchError:
                    continue

    @_unavailable_on_connection_errors
    async def list_audit(self, tenant: str, user: str | None = None) -> list[AuditEntry]:
        log_key, _ = self._audit_keys(tenant)
        entries = [AuditEntry.from_json(json.loads(raw)) for raw in await self._redis.lrange(log_key, 0, -1)]
        return entries if user is None else [e for e in entries if e.user == user]

    @_unavailable_on_connection_errors
    async def audit_head(self, tenant: str) -> tuple[int, str] | None:
        _, head_key = self._audit_keys(tenant)
        seq, digest = await self._redis.hmget(head_key, "seq", "hash")
        return (int(seq), digest.decode()) if seq else None

    @_unavailable_on_connection_errors
    async def expired_memories(self, tenant: str, before: datetime, limit: int) -> list[tuple[UserRef, str]]:
        found: list[tuple[UserRef, str]] = []
        tag = f"salience:{{{_escape(tenant)}:"
        async for key in self._redis.scan_iter(match=_glob(tag) + "*}:mem:*", count=1000):
            name = key.decode()
            created, pinned = await self._redis.hmget(key, "at", "pin")
            if pinned == b"1" or created is None or float(created) >= before.timestamp():
                continue
            user_part = name[len(tag):name.index("}:mem:")]
            found.append((UserRef(tenant, _unescape(user_part)), name[name.index("}:mem:") + 6:]))
            if len(found) >= limit:
                break
        return found


def _glob(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _unescape(part: str) -> str:
    return part.replace("%3A", ":").replace("%7D", "}").replace("%7B", "{").replace("%25", "%")
