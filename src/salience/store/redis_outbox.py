"""The Redis store's webhook outbox: durable escalation events under the ``{outbox}`` tag, claimed
with a lease.

Part of ``RedisStore`` (redis.py): its connection, scripts and sealing helpers (``self._redis``,
``self._key``, ``self._seal``) are the store's own.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from salience.model import (
    OutboxEvent,
)
from salience.store.redis_codec import (
    DONE_TTL,
    FAILED_TTL,
    OUTBOX,
    _dt,
    _unavailable_on_connection_errors,
)


class RedisOutbox:
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
