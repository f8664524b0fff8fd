"""The shared vocabulary of salience. Imports nothing from the package.

Every record carries its tenant and user: there is no way to name a user without
naming the tenant it belongs to.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np

Role = Literal["system", "user", "assistant", "tool", "developer"]
MemoryKind = Literal["fact", "event", "preference", "goal", "fear", "relationship", "safety"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def stable_id(prefix: str, *parts: str) -> str:
    """An id derived from its content, so the same input always names the same record."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
    return f"{prefix}_{digest}"


def content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass(frozen=True)
class UserRef:
    """A user as the store knows them: always inside a tenant."""

    tenant: str
    user: str


@dataclass
class Message:
    id: str
    role: str
    content: str
    created_at: datetime
    session_id: str
    name: str | None = None


@dataclass
class MemoryItem:
    id: str
    text: str
    kind: MemoryKind
    importance: float
    speaker: str
    created_at: datetime
    sources: list[str]
    session_id: str | None = None
    last_reinforced_at: datetime | None = None
    mention_count: int = 1
    pinned: bool = False
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass
class MemoryChanges:
    """What a user's memories became since a version a cache holds (``Store.memory_changes``).

    Deleted memories are not named: ``count`` tells whether any went, ``existing_memory_ids``
    which ones."""

    version: int  # the user's memory version these are as of
    count: int  # how many memories the user has, pinned ones included
    changed: list[MemoryItem] | None  # written (added, reinforced, replaced) since, store order; None: too many


@dataclass
class SignalChanges:
    """The user's message signals written since a version a person model holds
    (``Store.message_signal_changes``); deleted ones show only in ``count``."""

    version: int  # the user's version these are as of
    count: int  # how many signals the user has
    changed: list[MessageSignal] | None  # written since, any order; None: too many


@dataclass
class Session:
    id: str
    started_at: datetime
    last_seen_at: datetime


@dataclass
class ExtractionJob:
    """One exchange waiting to be turned into memories.

    The id is derived from the messages, so enqueueing the same exchange twice is a no-op.
    """

    id: str
    user: UserRef
    session_id: str
    messages: list[Message]
    attempts: int = 0


@dataclass
class SafetyRecord:
    """A user's safety state: what was flagged, and where escalation stands.

    Kept per user across sessions and restarts. An *episode* opens with the first message
    at or above the tenant's escalation threshold and closes after a quiet period; one
    escalation event is sent per episode (and one more if it turns imminent).
    """

    first_flagged_at: datetime
    last_flagged_at: datetime
    disclosures: int = 0
    latest_category: str = ""
    latest_severity: str = ""
    seen_message_ids: list[str] = field(default_factory=list)  # recent ones: a resent message counts once
    episode_id: str | None = None
    episode_started_at: datetime | None = None
    episode_last_at: datetime | None = None
    escalated_severity: str | None = None

    def to_json(self) -> dict[str, Any]:
        def ts(value: datetime | None) -> float | None:
            return value.timestamp() if value else None

        return {
            "first_flagged_at": ts(self.first_flagged_at),
            "last_flagged_at": ts(self.last_flagged_at),
            "disclosures": self.disclosures,
            "latest_category": self.latest_category,
            "latest_severity": self.latest_severity,
            "seen_message_ids": self.seen_message_ids,
            "episode_id": self.episode_id,
            "episode_started_at": ts(self.episode_started_at),
            "episode_last_at": ts(self.episode_last_at),
            "escalated_severity": self.escalated_severity,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SafetyRecord":
        def dt(value: float | None) -> datetime | None:
            return datetime.fromtimestamp(value, timezone.utc) if value is not None else None

        return cls(
            first_flagged_at=dt(data["first_flagged_at"]),  # type: ignore[arg-type]
            last_flagged_at=dt(data["last_flagged_at"]),  # type: ignore[arg-type]
            disclosures=data.get("disclosures", 0),
            latest_category=data.get("latest_category", ""),
            latest_severity=data.get("latest_severity", ""),
            seen_message_ids=list(data.get("seen_message_ids", [])),
            episode_id=data.get("episode_id"),
            episode_started_at=dt(data.get("episode_started_at")),
            episode_last_at=dt(data.get("episode_last_at")),
            escalated_severity=data.get("escalated_severity"),
        )


@dataclass
class OutboxEvent:
    """A webhook delivery waiting in the durable outbox. ``payload`` is the event, without
    its send-time timestamp; ``attempts`` counts deliveries tried so far (this one included
    once claimed)."""

    id: str
    tenant: str
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int = 0


@dataclass
class ErasureReceipt:
    """What an erasure removed: counts per kind of record, never the content itself."""

    user: UserRef
    erased_at: datetime
    memory_id: str | None = None  # None: the whole user
    removed: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, n: int) -> None:
        self.removed[kind] = self.removed.get(kind, 0) + int(n)


@dataclass
class AuditEntry:
    """One link of a tenant's audit chain. Ids and actions only, never memory text.

    ``hash`` is sha256 over the canonical JSON of every other field (``prev_hash`` included),
    so an edited, removed or reordered entry breaks the chain from that point on."""

    seq: int
    ts: str  # ISO 8601, UTC, microseconds: a string, so it hashes the same after any round trip
    tenant: str
    user: str | None
    action: str
    ids: list[str]
    request_id: str | None
    prev_hash: str
    hash: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "ts": self.ts, "tenant": self.tenant, "user": self.user, "action": self.action,
            "ids": list(self.ids), "request_id": self.request_id, "prev_hash": self.prev_hash,
        }

    def computed_hash(self) -> str:
        canonical = json.dumps(self.body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AuditEntry":
        return cls(
            seq=int(data["seq"]), ts=data["ts"], tenant=data["tenant"], user=data.get("user"),
            action=data["action"], ids=list(data.get("ids") or []), request_id=data.get("request_id"),
            prev_hash=data["prev_hash"], hash=data.get("hash", ""),
        )


GENESIS_HASH = "0" * 64


@dataclass
class AuditDraft:
    """An audit entry before the store chains it (seq, prev_hash and hash are the store's)."""

    tenant: str
    user: str | None
    action: str
    ids: list[str] = field(default_factory=list)
    request_id: str | None = None


def chain_entry(draft: AuditDraft, seq: int, prev_hash: str, at: datetime) -> AuditEntry:
    entry = AuditEntry(
        seq=seq, ts=at.astimezone(timezone.utc).isoformat(timespec="microseconds"), tenant=draft.tenant,
        user=draft.user, action=draft.action, ids=list(draft.ids), request_id=draft.request_id, prev_hash=prev_hash,
    )
    entry.hash = entry.computed_hash()
    return entry
EntityType = Literal["person", "pet", "place", "organisation", "condition"]


@dataclass
class Entity:
    """Someone or something the user talks about, as one node across sessions.

    ``id`` is derived from how the entity was first met (a relation, a name or both), so
    processing the same history again names the same entities. ``aliases`` are the surface
    forms that resolved to it ("Sarah", "my sister", "my sis"); ``relation`` is the user's
    relation to it ("sister"), or another speaker's ("sister of Melanie"). ``memory_ids``
    are the memories that mention it (filled by the store from its links).
    """

    id: str
    type: EntityType
    name: str
    aliases: list[str] = field(default_factory=list)
    relation: str | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    memory_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "type": self.type, "name": self.name, "aliases": self.aliases, "relation": self.relation,
            "first_seen": self.first_seen.timestamp() if self.first_seen else None,
            "last_seen": self.last_seen.timestamp() if self.last_seen else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], memory_ids: list[str] | None = None) -> "Entity":
        def dt(value: float | None) -> datetime | None:
            return datetime.fromtimestamp(value, timezone.utc) if value is not None else None

        return cls(
            id=data["id"], type=data["type"], name=data["name"], aliases=list(data.get("aliases", [])),
            relation=data.get("relation"), first_seen=dt(data.get("first_seen")), last_seen=dt(data.get("last_seen")),
            memory_ids=list(memory_ids or []),
        )


@dataclass
class MessageSignal:
    """What one user message says about the arc: its mood (VADER compound, -1..1), its topics
    (topic labels and entity ids) and whether the safety detector flagged it.

    Derived from the stored message alone, keyed by its id: saving it twice changes nothing,
    and the per-session series is recomputed from these rows on read."""

    message_id: str
    session_id: str
    created_at: datetime
    mood: float
    topics: list[str] = field(default_factory=list)
    flagged: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id, "session_id": self.session_id, "created_at": self.created_at.timestamp(),
            "mood": self.mood, "topics": self.topics, "flagged": self.flagged,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "MessageSignal":
        return cls(
            message_id=data["message_id"], session_id=data["session_id"],
            created_at=datetime.fromtimestamp(data["created_at"], timezone.utc), mood=float(data["mood"]),
            topics=list(data.get("topics", [])), flagged=bool(data.get("flagged", False)),
        )
