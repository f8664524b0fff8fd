"""The Redis store's audit log: one hash-chained list per tenant.

Part of ``RedisStore`` (redis.py): its connection, scripts and sealing helpers (``self._redis``,
``self._key``, ``self._seal``) are the store's own.
"""

from __future__ import annotations

import json
from datetime import datetime

from redis.exceptions import WatchError

from salience.model import (
    GENESIS_HASH,
    AuditDraft,
    AuditEntry,
    UserRef,
    chain_entry,
)
from salience.store.redis_codec import (
    _escape,
    _glob,
    _unavailable_on_connection_errors,
    _unescape,
)


class RedisAudit:
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
