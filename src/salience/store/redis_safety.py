"""The Redis store's safety records: a user's record, pinned safety memories and escalation events.

Part of ``RedisStore`` (redis.py): its connection, scripts and sealing helpers (``self._redis``,
``self._key``, ``self._seal``) are the store's own.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from salience.model import (
    MemoryItem,
    OutboxEvent,
    SafetyRecord,
    UserRef,
)
from salience.store.redis_codec import (
    _memory_fields,
    _unavailable_on_connection_errors,
    user_prefix,
)


class RedisSafety:
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
