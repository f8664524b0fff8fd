"""The ``Store`` protocol: everything salience keeps, and nothing about how it is kept.

Like an httpx transport, a store is a small explicit interface with one embedded
implementation (SQLite, the zero-setup default) and room for others (Redis) that must
pass the same conformance tests. No SQL, no key layout leaks through it. Every method
takes a ``UserRef`` (tenant + user) or a tenant: nothing can reach a user without
naming their tenant.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

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


class StoreUnavailable(Exception):
    """The store cannot be reached right now (a network store that is down or timing out).

    The request path answers in pass-through instead of failing; see ``pipeline``."""


class MasterKeyMissing(Exception):
    """Stored text is encrypted, but its tenant has no master key configured (or the user's
    data key is gone): it is never returned as if it were the text."""


SEALED = re.compile(r"^enc1:[A-Za-z0-9+/]{38,}={0,2}$")

# Records kept for a while only, the same on every store (Redis expires them, SQLite deletes
# them in the retention sweep): a debug trace (it quotes what went upstream), a finished
# extraction job (its id, so that a job delivered twice is applied once), a delivered webhook
# event; a job or event given up on stays longer, for inspection.
FINISHED_KEPT = timedelta(days=7)
GIVEN_UP_KEPT = timedelta(days=30)


def looks_sealed(text: str) -> bool:
    """A value sealed by a ``FieldCipher`` (``enc1:`` + base64 of nonce, ciphertext and tag)."""
    return text.startswith("enc1:") and SEALED.match(text) is not None


class FieldCipher(Protocol):
    """Encryption at rest, shared by every backend (``compliance/crypto.py`` implements it).

    The store keeps one wrapped data key per user and asks the cipher to make, unwrap and use
    it; the cipher holds the tenants' master keys. Erasing a user deletes their wrapped key."""

    def encrypts(self, tenant: str) -> bool: ...

    def new_wrapped_key(self, tenant: str) -> bytes: ...

    def unwrap(self, tenant: str, wrapped: bytes) -> bytes: ...

    def seal(self, key: bytes, plaintext: str, context: str) -> str: ...

    def open(self, key: bytes, token: str, context: str) -> str: ...


@runtime_checkable
class Store(Protocol):
    url: str

    async def open(self) -> None:
        """Create or migrate the schema. Idempotent."""

    async def close(self) -> None: ...

    # -- sessions and messages --------------------------------------------------------
    async def resolve_session(
        self, user: UserRef, requested: str | None, now: datetime, inactivity_gap: timedelta
    ) -> str:
        """The session for this request: ``requested`` if given, else the user's latest
        session if it was active within ``inactivity_gap``, else a new one."""

    async def add_messages(self, user: UserRef, messages: list[Message]) -> None:
        """Store messages; a message whose id exists already is left as it is."""

    # -- memories ---------------------------------------------------------------------
    async def load_memories(self, user: UserRef) -> list[MemoryItem]:
        """Every memory of the user, embeddings included, oldest first."""

    async def get_memory(self, user: UserRef, memory_id: str) -> MemoryItem | None: ...

    async def list_memories(
        self, user: UserRef, limit: int, after: str | None = None
    ) -> tuple[list[MemoryItem], bool]:
        """A page of memories, oldest first, without embeddings, and whether more follow."""

    async def existing_memory_ids(self, user: UserRef, memory_ids: list[str]) -> set[str]:
        """Which of ``memory_ids`` the user still has (recall serving a cached set that may be
        stale checks what it is about to inject: an erased memory is never injected again)."""

    async def memory_version(self, user: UserRef) -> int:
        """A number that changes whenever the user's memories change (for caches)."""

    async def memory_changes(self, user: UserRef, since: int, limit: int) -> MemoryChanges:
        """Every memory written (added, reinforced, replaced) after the user's version was
        ``since``, with its embedding, in ``load_memories`` order; the version and the count of
        memories they are as of, read together with them. ``changed`` is None when more than
        ``limit`` were written: loading them all costs less then. A cache holding the set of
        version ``since`` brings it up to date with these, and a count lower than it expects
        says some of its memories were deleted."""

    async def delete_memory(self, user: UserRef, memory_id: str) -> bool:
        """Delete one memory and bump the user's version; False when there was none. Its
        entity links go with it (``unlink_memory``)."""

    # -- the person model: entities and the arc's per-message signals -------------------------
    # Derived data, written by the worker before it commits the job's memories (a re-run
    # writes the same rows again). Both bump the user's version, so caches see them.
    async def save_entities(self, user: UserRef, entities: list[Entity], links: list[tuple[str, str]]) -> None:
        """Insert or update each entity by id (the stored aliases are kept: the union is
        saved) and add the (entity id, memory id) links."""

    async def load_entities(self, user: UserRef) -> list[Entity]:
        """Every entity of the user with its linked memory ids, first seen first."""

    async def unlink_memory(self, user: UserRef, memory_id: str) -> tuple[int, int]:
        """Erasure of a memory's derived data: drop its entity links, and every entity left
        with no memory at all; returns (links, entities) removed. ``delete_memory`` and
        ``erase_memory`` do this too."""

    async def save_message_signals(self, user: UserRef, signals: list[MessageSignal]) -> None:
        """Insert or replace each message's signal, keyed by message id."""

    async def load_message_signals(self, user: UserRef) -> list[MessageSignal]:
        """Every message signal of the user, oldest first (the arc is computed from these)."""

    async def message_signal_changes(self, user: UserRef, since: int, limit: int) -> SignalChanges:
        """The signals written after the user's version was ``since`` (each carries the version
        that wrote it), with the version and the signal count they are as of, read together.
        ``changed`` is None when more than ``limit`` were written. A person model of version
        ``since`` is brought up to date with these; a count lower than it expects says some
        were deleted (then it loads them all)."""

    # -- safety -----------------------------------------------------------------------------
    async def get_safety_record(self, user: UserRef) -> SafetyRecord | None:
        """The user's safety record; None for a user never flagged."""

    async def save_safety_update(
        self,
        user: UserRef,
        record: SafetyRecord,
        pinned: list[MemoryItem],
        events: list[OutboxEvent],
        now: datetime,
    ) -> None:
        """All at once, or nothing: replace the user's safety record; insert or replace each
        pinned memory by id (all fields; bumps the user's version); queue each event
        (an id queued before is ignored)."""

    # -- the outbox: webhook deliveries ------------------------------------------------------
    async def enqueue_outbox(self, event: OutboxEvent, now: datetime) -> bool:
        """Queue an event durably, due now; False when its id was queued before."""

    async def claim_outbox(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEvent]:
        """Lease up to ``limit`` due events, oldest first, counting the attempt; an event
        whose lease runs out is claimable again."""

    async def ack_outbox(self, event_id: str, now: datetime) -> None:
        """The event was delivered: never claim it again."""

    async def retry_outbox(self, event_id: str, error: str, available_at: datetime | None) -> None:
        """Put a leased event back, due at ``available_at``; None gives up on it."""

    async def pending_outbox(self, tenant: str | None = None) -> int:
        """Events queued or leased, not yet delivered or given up (for one tenant, or all)."""

    # -- the extraction queue -----------------------------------------------------------
    async def enqueue_extraction(self, job: ExtractionJob, now: datetime) -> bool:
        """Queue a job durably; False when a job with the same id was queued before."""

    async def claim_extraction_jobs(
        self, limit: int, now: datetime, lease: timedelta
    ) -> list[ExtractionJob]:
        """Lease up to ``limit`` due jobs; a job whose lease runs out is claimable again."""

    async def commit_extraction(
        self,
        job: ExtractionJob,
        added: list[MemoryItem],
        reinforced: list[MemoryItem],
    ) -> None:
        """Atomically store the job's messages and memories and mark the job done."""

    async def retry_extraction(self, job_id: str, error: str, available_at: datetime | None) -> None:
        """Put a leased job back for another try at ``available_at``; None gives up on it."""

    async def pending_extractions(self, user: UserRef | None = None) -> int:
        """Jobs queued or leased, not yet done or given up (for one user, or all)."""

    # -- traces ------------------------------------------------------------------------
    async def save_trace(
        self, tenant: str, trace_id: str, payload: dict[str, Any], now: datetime, refs: list[str] | None = None
    ) -> None:
        """Keep a trace; ``payload["user"]`` names its user and ``refs`` the memory and message
        ids it contains, so erasing any of them removes it."""

    async def get_trace(self, tenant: str, trace_id: str) -> dict[str, Any] | None: ...

    # -- compliance: erasure, export, audit (see docs/compliance.md) --------------------------
    async def user_exists(self, user: UserRef) -> bool:
        """Whether the store holds anything of this user (sessions, messages, memories, safety)."""

    async def load_messages(self, user: UserRef, message_ids: list[str]) -> list[Message]:
        """The stored messages among ``message_ids`` (missing ones are left out)."""

    async def erase_memory(self, user: UserRef, memory_id: str, now: datetime) -> ErasureReceipt | None:
        """Remove one memory and everything derived from it, at once: its row and embedding, the
        messages it came from, pending extraction jobs holding those messages, traces holding
        it, the safety record's references to them; bump the version. None: no such memory."""

    async def erase_user(self, user: UserRef, now: datetime) -> ErasureReceipt:
        """Remove everything of the user except audit entries (which hold no content), their
        data key included (crypto-shredding), and reclaim the space."""

    async def append_audit(self, tenant: str, drafts: list[AuditDraft], now: datetime) -> list[AuditEntry]:
        """Chain the drafts onto the tenant's audit log, atomically, in order."""

    async def list_audit(self, tenant: str, user: str | None = None) -> list[AuditEntry]:
        """The tenant's audit entries in chain order (only those about ``user`` if given), as stored."""

    async def audit_head(self, tenant: str) -> tuple[int, str] | None:
        """The last seq and hash the tenant's chain was extended with (None: no entries)."""

    async def expired_memories(self, tenant: str, before: datetime, limit: int) -> list[tuple[UserRef, str]]:
        """Up to ``limit`` non-pinned memories of the tenant created before ``before`` (retention)."""

    async def prune_finished(self, now: datetime, limit: int) -> int:
        """Delete up to ``limit`` of the records that are kept for a while only, once their time
        is up: debug traces and finished extraction jobs and webhook events (``FINISHED_KEPT``),
        jobs and events given up on (``GIVEN_UP_KEPT``); returns how many. A store whose records
        expire on their own (Redis) deletes nothing here."""


def open_store(url: str, cipher: FieldCipher | None = None) -> Store:
    """A store for ``url``: ``sqlite:///path/to/file.db`` or ``redis://[:password@]host:port/db``
    (``rediss://`` for TLS)."""
    if url.startswith("sqlite:///"):
        from salience.store.sqlite import SQLiteStore

        return SQLiteStore(url, cipher)
    if url.startswith(("redis://", "rediss://")):
        from salience.store.redis import RedisStore

        return RedisStore(url, cipher)
    scheme = url.split(":", 1)[0]
    raise ValueError(f"unsupported store URL scheme {scheme!r}: use sqlite:///path or redis://host:port/db")
