"""Retention: a tenant's ``retention_days`` is the longest a non-pinned memory is kept.

A background ``Poller`` erases expired memories through the same store erasure as the API
(derived data included), each with a ``retention.erase`` audit entry. Pinned (safety)
memories are kept: they hold what a crisis responder needs. The same sweep prunes what every
store keeps for a while only (debug traces, finished jobs and webhook events:
``Store.prune_finished``), on stores where it does not expire by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from salience.background import Poller
from salience.compliance.audit import Auditor
from salience.model import UserRef, utcnow
from salience.settings import TenantSettings
from salience.store.base import Store

BATCH = 100
PRUNE_BATCH = 1_000


class RetentionSweeper:
    def __init__(
        self,
        store_of: Callable[[str], Store],
        tenants: dict[str, TenantSettings],
        auditor: Auditor,
        forget: Callable[[UserRef], None],
        poll_seconds: float,
    ) -> None:
        self.store_of = store_of
        self.tenants = tenants
        self.auditor = auditor
        self.forget = forget
        self._poller = Poller("salience-retention", self.run_once, poll_seconds)

    async def run_once(self) -> int:
        """Erase one batch of expired memories per tenant, prune one batch of finished records
        per store; returns how many memories were erased."""
        erased = 0
        now = utcnow()
        stores = {id(store): store for store in (self.store_of(tenant_id) for tenant_id in self.tenants)}
        for store in stores.values():
            await store.prune_finished(now, PRUNE_BATCH)
        for tenant in self.tenants.values():
            if tenant.retention_days is None:
                continue
            store = self.store_of(tenant.id)
            for user, memory_id in await store.expired_memories(tenant.id, now - timedelta(days=tenant.retention_days), BATCH):
                if await store.erase_memory(user, memory_id, now) is not None:
                    self.forget(user)
                    await self.auditor.record(tenant.id, user.user, "retention.erase", [memory_id])
                    erased += 1
        return erased

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()
