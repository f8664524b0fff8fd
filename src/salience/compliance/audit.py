"""The audit log: one append-only, hash-chained log per tenant, kept by the store.

Each entry holds ids and an action, never memory text, and carries the hash of the entry
before it (``model.AuditEntry``), so editing, removing or reordering any entry breaks the
chain from there; the store's head (last seq and hash) catches a truncated tail.

Actions: ``recall.inject`` (the memory ids injected, the request), ``memory.write`` and
``memory.reinforce`` (an extraction commit), ``memory.erase``, ``user.erase``, ``retention.erase``,
``export``, ``admin.access``, ``safety.escalation`` (the event ids).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from salience.model import GENESIS_HASH, AuditDraft, AuditEntry, UserRef, utcnow
from salience.store.base import Store

log = logging.getLogger("salience.audit")


class Auditor:
    """Appends to a tenant's chain. A failed append is logged (action only) and re-raised for
    the callers that must not succeed without it (erasure, export); the request path and the
    worker call ``record_quietly``."""

    def __init__(self, store_of: "StoreOf") -> None:
        self.store_of = store_of

    async def record(
        self, tenant: str, user: str | None, action: str, ids: list[str] | None = None, request_id: str | None = None
    ) -> AuditEntry:
        [entry] = await self.store_of(tenant).append_audit(
            tenant, [AuditDraft(tenant, user, action, list(ids or []), request_id)], utcnow()
        )
        return entry

    async def record_quietly(
        self, tenant: str, user: str | None, action: str, ids: list[str] | None = None, request_id: str | None = None
    ) -> None:
        try:
            await self.record(tenant, user, action, ids, request_id)
        except Exception as exc:
            log.error("could not append %s to the audit log of tenant %s: %s", action, tenant, type(exc).__name__)

    async def for_user(self, user: UserRef) -> list[AuditEntry]:
        return await self.store_of(user.tenant).list_audit(user.tenant, user.user)


class StoreOf:  # the shape of ``Services.store_for``: a tenant id -> that tenant's region's store
    def __call__(self, tenant: str) -> Store: ...


@dataclass
class Verification:
    tenant: str
    ok: bool
    entries: int
    bad_seq: int | None = None  # the first entry that does not hold (or where one is missing)
    reason: str = ""
    head_hash: str | None = None  # the last hash: keep it elsewhere to detect a rewritten chain

    def as_json(self) -> dict[str, object]:
        return {"tenant": self.tenant, "ok": self.ok, "entries": self.entries, "bad_seq": self.bad_seq,
                "reason": self.reason, "head_hash": self.head_hash}


def verify_chain(tenant: str, entries: list[AuditEntry], head: tuple[int, str] | None) -> Verification:
    """Walk the chain as stored: seq counts up from 1, each entry's prev_hash is the previous
    entry's hash, each hash is what its content hashes to, and the last one is the head."""
    prev = GENESIS_HASH
    for position, entry in enumerate(entries, start=1):
        if entry.tenant != tenant:
            return Verification(tenant, False, len(entries), entry.seq, "entry belongs to another tenant")
        if entry.seq != position:
            return Verification(tenant, False, len(entries), position,
                                f"expected seq {position}, found {entry.seq}: an entry was removed or reordered")
        if entry.prev_hash != prev:
            return Verification(tenant, False, len(entries), entry.seq,
                                "prev_hash does not match the previous entry: an entry was removed or reordered")
        if entry.computed_hash() != entry.hash:
            return Verification(tenant, False, len(entries), entry.seq, "hash does not match the content: the entry was edited")
        prev = entry.hash
    last = (len(entries), prev) if entries else None
    if head is not None and last != head:
        return Verification(tenant, False, len(entries), len(entries) + 1 if entries else 1,
                            f"the chain ends at seq {len(entries)} but its head says {head[0]}: entries were removed")
    return Verification(tenant, True, len(entries), head_hash=prev if entries else None)


async def verify_tenant(store: Store, tenant: str) -> Verification:
    return verify_chain(tenant, await store.list_audit(tenant), await store.audit_head(tenant))
