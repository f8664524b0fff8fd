"""The shared vocabulary of salience. Imports nothing from the package.

Every record carries its tenant and user: there is no way to name a user without
naming the tenant it belongs to.
"""

from __future__ import annotations

import hashlib
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
