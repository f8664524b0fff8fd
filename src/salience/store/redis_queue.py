"""The Redis store's extraction queue: a stream with a consumer group, leases and delayed retries.

Part of ``RedisStore`` (redis.py): its connection, scripts and sealing helpers (``self._redis``,
``self._key``, ``self._seal``) are the store's own.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from redis.exceptions import ResponseError

from salience.model import (
    ExtractionJob,
    MemoryItem,
    UserRef,
)
from salience.store.redis_codec import (
    DONE_TTL,
    FAILED_TTL,
    GROUP,
    QUEUE,
    _memory_fields,
    _reinforcement_fields,
    _unavailable_on_connection_errors,
    user_prefix,
)
from salience.store.sqlite_schema import _message_from_json, _message_to_json


class RedisQueue:
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
