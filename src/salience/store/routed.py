"""Residency: one store per region, each tenant's calls routed to its region's store.

Every ``Store`` method names a tenant (directly, through a ``UserRef``, a job or an event), so
routing is a lookup; the queue and outbox methods that name no tenant (claiming, counting)
ask every region and remember which store handed out a job or event, to acknowledge it there.
A tenant's data is only ever written to its region's store.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from salience.model import (
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
    SignalChanges,
    UserRef,
)
from salience.store.base import Store, StoreUnavailable


class RoutedStore:
    def __init__(self, stores: dict[str, Store], region_of: dict[str, str]) -> None:
        self.stores = stores  # region -> store
        self.region_of = region_of  # tenant -> region
        self.url = ",".join(f"{region}={store.url}" for region, store in stores.items())
        self._job_store: dict[str, Store] = {}
        self._event_store: dict[str, Store] = {}

    def of(self, tenant: str) -> Store:
        return self.stores[self.region_of[tenant]]

    async def open(self) -> None:
        unavailable = None
        for store in self.stores.values():
            try:
                await store.open()
            except StoreUnavailable as exc:  # the other regions still serve
                unavailable = exc
        if unavailable is not None:
            raise unavailable

    async def close(self) -> None:
        for store in self.stores.values():
            await store.close()

    async def _each(self, call: Any) -> list[Any]:
        results = []
        for store in self.stores.values():
            try:
                results.append((store, await call(store)))
            except StoreUnavailable:
                continue  # one region down does not stop the others' queues
        return results

    # -- per user / per tenant: a lookup -----------------------------------------------------------
    async def resolve_session(self, user: UserRef, requested: str | None, now: datetime, inactivity_gap: timedelta) -> str:
        return await self.of(user.tenant).resolve_session(user, requested, now, inactivity_gap)

    async def add_messages(self, user: UserRef, messages: list[Message]) -> None:
        await self.of(user.tenant).add_messages(user, messages)

    async def load_memories(self, user: UserRef) -> list[MemoryItem]:
        return await self.of(user.tenant).load_memories(user)

    async def get_memory(self, user: UserRef, memory_id: str) -> MemoryItem | None:
        return await self.of(user.tenant).get_memory(user, memory_id)

    async def list_memories(self, user: UserRef, limit: int, after: str | None = None) -> tuple[list[MemoryItem], bool]:
        return await self.of(user.tenant).list_memories(user, limit, after)

    async def memory_version(self, user: UserRef) -> int:
        return await self.of(user.tenant).memory_version(user)

    async def memory_changes(self, user: UserRef, since: int, limit: int) -> MemoryChanges:
        return await self.of(user.tenant).memory_changes(user, since, limit)

    async def existing_memory_ids(self, user: UserRef, memory_ids: list[str]) -> set[str]:
        return await self.of(user.tenant).existing_memory_ids(user, memory_ids)

    async def save_entities(self, user: UserRef, entities: list[Entity], links: list[tuple[str, str]]) -> None:
        await self.of(user.tenant).save_entities(user, entities, links)

    async def load_entities(self, user: UserRef) -> list[Entity]:
        return await self.of(user.tenant).load_entities(user)

    async def unlink_memory(self, user: UserRef, memory_id: str) -> tuple[int, int]:
        return await self.of(user.tenant).unlink_memory(user, memory_id)

    async def save_message_signals(self, user: UserRef, signals: list[MessageSignal]) -> None:
        await self.of(user.tenant).save_message_signals(user, signals)

    async def load_message_signals(self, user: UserRef) -> list[MessageSignal]:
        return await self.of(user.tenant).load_message_signals(user)

    async def message_signal_changes(self, user: UserRef, since: int, limit: int) -> SignalChanges:
        return await self.of(user.tenant).message_signal_changes(user, since, limit)

    async def delete_memory(self, user: UserRef, memory_id: str) -> bool:
        return await self.of(user.tenant).delete_memory(user, memory_id)

    async def get_safety_record(self, user: UserRef) -> SafetyRecord | None:
        return await self.of(user.tenant).get_safety_record(user)

    async def save_safety_update(
        self, user: UserRef, record: SafetyRecord, pinned: list[MemoryItem], events: list[OutboxEvent], now: datetime
    ) -> None:
        await self.of(user.tenant).save_safety_update(user, record, pinned, events, now)

    async def enqueue_outbox(self, event: OutboxEvent, now: datetime) -> bool:
        return await self.of(event.tenant).enqueue_outbox(event, now)

    async def enqueue_extraction(self, job: ExtractionJob, now: datetime) -> bool:
        return await self.of(job.user.tenant).enqueue_extraction(job, now)

    async def commit_extraction(self, job: ExtractionJob, added: list[MemoryItem], reinforced: list[MemoryItem]) -> None:
        await self.of(job.user.tenant).commit_extraction(job, added, reinforced)
        self._job_store.pop(job.id, None)

    async def save_trace(
        self, tenant: str, trace_id: str, payload: dict[str, Any], now: datetime, refs: list[str] | None = None
    ) -> None:
        await self.of(tenant).save_trace(tenant, trace_id, payload, now, refs)

    async def get_trace(self, tenant: str, trace_id: str) -> dict[str, Any] | None:
        return await self.of(tenant).get_trace(tenant, trace_id)

    async def user_exists(self, user: UserRef) -> bool:
        return await self.of(user.tenant).user_exists(user)

    async def load_messages(self, user: UserRef, message_ids: list[str]) -> list[Message]:
        return await self.of(user.tenant).load_messages(user, message_ids)

    async def erase_memory(self, user: UserRef, memory_id: str, now: datetime) -> ErasureReceipt | None:
        return await self.of(user.tenant).erase_memory(user, memory_id, now)

    async def erase_user(self, user: UserRef, now: datetime) -> ErasureReceipt:
        return await self.of(user.tenant).erase_user(user, now)

    async def append_audit(self, tenant: str, drafts: list[AuditDraft], now: datetime) -> list[AuditEntry]:
        return await self.of(tenant).append_audit(tenant, drafts, now)

    async def list_audit(self, tenant: str, user: str | None = None) -> list[AuditEntry]:
        return await self.of(tenant).list_audit(tenant, user)

    async def audit_head(self, tenant: str) -> tuple[int, str] | None:
        return await self.of(tenant).audit_head(tenant)

    async def expired_memories(self, tenant: str, before: datetime, limit: int) -> list[tuple[UserRef, str]]:
        return await self.of(tenant).expired_memories(tenant, before, limit)

    async def prune_finished(self, now: datetime, limit: int) -> int:
        return sum(pruned for _, pruned in await self._each(lambda s: s.prune_finished(now, limit)))

    # -- queues: every region, acknowledged where claimed -------------------------------------------
    async def claim_extraction_jobs(self, limit: int, now: datetime, lease: timedelta) -> list[ExtractionJob]:
        jobs = []
        for store, claimed in await self._each(lambda s: s.claim_extraction_jobs(limit, now, lease)):
            for job in claimed:
                self._job_store[job.id] = store
            jobs.extend(claimed)
        return jobs

    async def retry_extraction(self, job_id: str, error: str, available_at: datetime | None) -> None:
        store = self._job_store.pop(job_id, None)
        if store is not None:
            await store.retry_extraction(job_id, error, available_at)

    async def pending_extractions(self, user: UserRef | None = None) -> int:
        if user is not None:
            return await self.of(user.tenant).pending_extractions(user)
        return sum(n for _, n in await self._each(lambda s: s.pending_extractions()))

    async def claim_outbox(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEvent]:
        events = []
        for store, claimed in await self._each(lambda s: s.claim_outbox(limit, now, lease)):
            for event in claimed:
                self._event_store[event.id] = store
            events.extend(claimed)
        return events

    async def ack_outbox(self, event_id: str, now: datetime) -> None:
        store = self._event_store.pop(event_id, None)
        if store is not None:
            await store.ack_outbox(event_id, now)

    async def retry_outbox(self, event_id: str, error: str, available_at: datetime | None) -> None:
        store = self._event_store.pop(event_id, None)
        if store is not None:
            await store.retry_outbox(event_id, error, available_at)

    async def pending_outbox(self, tenant: str | None = None) -> int:
        if tenant is not None:
            return await self.of(tenant).pending_outbox(tenant)
        return sum(n for _, n in await self._each(lambda s: s.pending_outbox()))
