"""The shared store: Redis (or a Redis Cluster slot per user), for several proxy replicas.

Key layout (``docs/scaling.md`` has the measured sizes):

    salience:{t:u}:sessions        zset   session id -> last seen (unix s)
    salience:{t:u}:msgs            hash   message id -> JSON
    salience:{t:u}:mem:<id>        hash   one memory; ``emb`` holds float32 bytes
    salience:{t:u}:mems            zset   memory id -> insertion order
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
    salience:tenant:<t>:trace:<id> string a debug trace (expires)

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
    Entity,
    ExtractionJob,
    MemoryItem,
    Message,
    MessageSignal,
    OutboxEvent,
    SafetyRecord,
    UserRef,
    new_id,
)
from salience.store import redis_scripts as scripts
from salience.store.base import StoreUnavailable
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
    def __init__(self, url: str) -> None:
        self.url = url
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
        self._save_safety = self._redis.register_script(scripts.SAVE_SAFETY)
        self._unlink_memory = self._redis.register_script(scripts.UNLINK_MEMORY)
        self._outbox_enqueue = self._redis.register_script(scripts.OUTBOX_ENQUEUE)
        self._outbox_claim = self._redis.register_script(scripts.OUTBOX_CLAIM)
        self._outbox_ack = self._redis.register_script(scripts.OUTBOX_ACK)
        self._outbox_retry = self._redis.register_script(scripts.OUTBOX_RETRY)

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
        async with self._redis.pipeline(transaction=True) as tx:
            for message in messages:
                tx.hsetnx(key, message.id, json.dumps(_message_to_json(message)))
            await tx.execute()

    # -- memories ---------------------------------------------------------------------------
    async def _read_memories(self, user: UserRef, ids: list[bytes], with_embedding: bool) -> list[MemoryItem]:
        prefix = user_prefix(user)
        async with self._redis.pipeline(transaction=False) as pipe:
            for memory_id in ids:
                pipe.hgetall(f"{prefix}:mem:{memory_id.decode()}")
            rows = await pipe.execute()
        return [
            _memory_from_hash(memory_id.decode(), row, with_embedding) for memory_id, row in zip(ids, rows) if row
        ]

    @_unavailable_on_connection_errors
    async def load_memories(self, user: UserRef) -> list[MemoryItem]:
        ids = await self._redis.zrange(f"{user_prefix(user)}:mems", 0, -1)
        return await self._read_memories(user, ids, with_embedding=True)

    @_unavailable_on_connection_errors
    async def get_memory(self, user: UserRef, memory_id: str) -> MemoryItem | None:
        row = await self._redis.hgetall(f"{user_prefix(user)}:mem:{memory_id}")
        return _memory_from_hash(memory_id, row, with_embedding=False) if row else None

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
    async def memory_version(self, user: UserRef) -> int:
        version = await self._redis.hget(f"{user_prefix(user)}:meta", "version")
        return int(version) if version else 0

    @_unavailable_on_connection_errors
    async def delete_memory(self, user: UserRef, memory_id: str) -> bool:
        prefix = user_prefix(user)
        deleted = await self._delete_memory(
            keys=[f"{prefix}:mem:{memory_id}", f"{prefix}:mems", f"{prefix}:meta"], args=[memory_id]
        )
        if deleted == 1:
            await self.unlink_memory(user, memory_id)
        return deleted == 1

    # -- the person model: entities and message signals -----------------------------------------
    @_unavailable_on_connection_errors
    async def unlink_memory(self, user: UserRef, memory_id: str) -> None:
        prefix = user_prefix(user)
        entity_ids = sorted(m.decode() for m in await self._redis.smembers(f"{prefix}:mement:{memory_id}"))
        await self._unlink_memory(
            keys=[f"{prefix}:mement:{memory_id}", f"{prefix}:entities", f"{prefix}:meta",
                  *(f"{prefix}:ent:{e}" for e in entity_ids)],
            args=[memory_id, *entity_ids],
        )

    @_unavailable_on_connection_errors
    async def save_entities(self, user: UserRef, entities: list[Entity], links: list[tuple[str, str]]) -> None:
        if not entities and not links:
            return
        prefix = user_prefix(user)
        key = f"{prefix}:entities"
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:  # optimistic: the aliases are a union with what another worker just saved
                try:
                    await pipe.watch(key)
                    stored = await pipe.hmget(key, [e.id for e in entities]) if entities else []
                    pipe.multi()
                    for entity, raw in zip(entities, stored):
                        doc = entity.to_json()
                        if raw:
                            doc["aliases"] = list(dict.fromkeys([*json.loads(raw).get("aliases", []), *entity.aliases]))
                        pipe.hset(key, entity.id, json.dumps(doc))
                    for entity_id, memory_id in links:
                        pipe.sadd(f"{prefix}:ent:{entity_id}", memory_id)
                        pipe.sadd(f"{prefix}:mement:{memory_id}", entity_id)
                    pipe.hincrby(f"{prefix}:meta", "version", 1)
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    @_unavailable_on_connection_errors
    async def load_entities(self, user: UserRef) -> list[Entity]:
        prefix = user_prefix(user)
        docs = await self._redis.hgetall(f"{prefix}:entities")
        ids = [entity_id.decode() for entity_id in docs]
        async with self._redis.pipeline(transaction=False) as pipe:
            for entity_id in ids:
                pipe.smembers(f"{prefix}:ent:{entity_id}")
            members = await pipe.execute()
        entities = [
            Entity.from_json(json.loads(docs[entity_id.encode()]), sorted(m.decode() for m in linked))
            for entity_id, linked in zip(ids, members)
        ]
        return sorted(entities, key=lambda e: (e.first_seen.timestamp() if e.first_seen else 0.0, e.id))

    @_unavailable_on_connection_errors
    async def save_message_signals(self, user: UserRef, signals: list[MessageSignal]) -> None:
        if not signals:
            return
        prefix = user_prefix(user)
        async with self._redis.pipeline(transaction=True) as tx:
            tx.hset(f"{prefix}:signals", mapping={s.message_id: json.dumps(s.to_json()) for s in signals})
            tx.hincrby(f"{prefix}:meta", "version", 1)
            await tx.execute()

    @_unavailable_on_connection_errors
    async def load_message_signals(self, user: UserRef) -> list[MessageSignal]:
        raw = await self._redis.hvals(f"{user_prefix(user)}:signals")
        signals = [MessageSignal.from_json(json.loads(value)) for value in raw]
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
        args: list[Any] = [json.dumps(record.to_json()), repr(now.timestamp()), len(pinned)]
        for item in pinned:
            fields = _memory_fields(item)
            args += [item.id, len(fields), *fields]
        await self._save_safety(
            keys=[f"{prefix}:safety", f"{prefix}:mems", f"{prefix}:meta", *(f"{prefix}:mem:{m.id}" for m in pinned)],
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
        added = await self._enqueue(
            keys=[f"{QUEUE}:job:{job.id}", f"{QUEUE}:stream", f"{QUEUE}:pending"],
            args=[
                job.id, job.user.tenant, job.user.user, job.session_id,
                json.dumps([_message_to_json(m) for m in job.messages]), repr(now.timestamp()),
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
        return [
            ExtractionJob(
                id=job_id.decode(),
                user=UserRef(tenant.decode(), user.decode()),
                session_id=session.decode(),
                messages=[_message_from_json(m) for m in json.loads(messages)],
                attempts=int(attempts),
            )
            for job_id, attempts, tenant, user, session, messages in rows
        ]

    @_unavailable_on_connection_errors
    async def commit_extraction(
        self, job: ExtractionJob, added: list[MemoryItem], reinforced: list[MemoryItem]
    ) -> None:
        prefix = user_prefix(job.user)
        args: list[Any] = [DONE_TTL, "", len(job.messages)]
        for message in job.messages:
            args += [message.id, json.dumps(_message_to_json(message))]
        args.append(len(added))
        for item in added:
            fields = _memory_fields(item)
            args += [item.id, len(fields), *fields]
        args.append(len(reinforced))
        for item in reinforced:
            fields = _reinforcement_fields(item)
            args += [len(fields), *fields]
        # 1. the user's side, atomically: memories, messages, version, "this job is done"
        await self._commit(
            keys=[
                f"{prefix}:done:{job.id}", f"{prefix}:msgs", f"{prefix}:mems", f"{prefix}:meta",
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
    async def save_trace(self, tenant: str, trace_id: str, payload: dict[str, Any], now: datetime) -> None:
        await self._redis.set(self._trace_key(tenant, trace_id), json.dumps(payload), ex=TRACE_TTL)

    @_unavailable_on_connection_errors
    async def get_trace(self, tenant: str, trace_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self._trace_key(tenant, trace_id))
        return json.loads(raw) if raw else None
