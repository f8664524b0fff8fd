"""Importing existing transcripts with their real timestamps, extracted before returning."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable, Literal

from pydantic import BaseModel, Field

from salience.model import ExtractionJob, Message, UserRef, stable_id
from salience.store.base import Store
from salience.worker import ExtractionWorker


class ImportMessage(BaseModel):
    id: str = Field(min_length=1, max_length=256)
    role: Literal["user", "assistant", "system", "tool", "developer"]
    content: str
    name: str | None = None
    timestamp: datetime | None = None


class ImportSession(BaseModel):
    id: str = Field(min_length=1, max_length=256)
    started_at: datetime
    messages: list[ImportMessage]


class ImportRequest(BaseModel):
    sessions: list[ImportSession]


@dataclass
class ImportResult:
    sessions: int = 0
    messages: int = 0
    memories_added: int = 0
    memories_reinforced: int = 0
    safety_flagged: int = 0


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


async def import_sessions(
    store: Store,
    worker: ExtractionWorker,
    user: UserRef,
    sessions: list[ImportSession],
    on_session: Callable[[ImportSession], None] | None = None,
    screen: Callable[[list[Message]], Awaitable[int]] | None = None,
) -> ImportResult:
    """Store each session's messages and extract its memories, oldest session first.

    Importing the same transcript again changes nothing: message ids are the caller's,
    memory ids derive from them, and a message already counted is never counted twice.
    ``screen`` (the safety layer) sees each session's messages, so a disclosure in an
    imported transcript is pinned with its real date.
    """
    result = ImportResult()
    for session in sorted(sessions, key=lambda s: _utc(s.started_at)):
        started = _utc(session.started_at)
        messages = [
            Message(
                id=m.id,
                role=m.role,
                content=m.content,
                name=m.name,
                created_at=_utc(m.timestamp) if m.timestamp else started,
                session_id=session.id,
            )
            for m in session.messages
        ]
        last_seen = max((m.created_at for m in messages), default=started)
        for moment in (started, last_seen):  # creates the session, then moves its last activity
            await store.resolve_session(user, session.id, moment, timedelta(0))
        job = ExtractionJob(
            id=stable_id("job", user.tenant, user.user, "import", session.id, *(m.id for m in messages)),
            user=user,
            session_id=session.id,
            messages=messages,
        )
        added, reinforced = await worker.process(job)
        if screen is not None:
            result.safety_flagged += await screen(messages)
        result.sessions += 1
        result.messages += len(messages)
        result.memories_added += added
        result.memories_reinforced += reinforced
        if on_session:
            on_session(session)
    return result
