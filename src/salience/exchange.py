"""An exchange: the turns of a completion worth extracting, and the job that carries them.

Shared by the request path (which queues the exchange after the reply) and the spool
(which keeps it on local disk while the store is unreachable and queues it later).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from salience.model import ExtractionJob, Message, UserRef, content_text, stable_id


@dataclass(frozen=True)
class Turn:
    """One message of the exchange, with its position in the app's ``messages`` array."""

    index: int
    role: str
    content: str
    name: str | None = None


def exchange_turns(request_messages: list[dict[str, Any]], reply_text: str) -> list[Turn]:
    """The trailing user messages of the request and the assistant's reply."""
    start = len(request_messages)
    while start > 0 and request_messages[start - 1].get("role") == "user":
        start -= 1
    turns = []
    for index in range(start, len(request_messages)):
        message = request_messages[index]
        text = content_text(message.get("content"))
        if text:
            turns.append(Turn(index, "user", text, message.get("name")))
    if reply_text:
        turns.append(Turn(len(request_messages), "assistant", reply_text))
    return turns


def exchange_messages(user: UserRef, session_id: str, at: datetime, turns: list[Turn]) -> list[Message]:
    """The turns as messages. A message's id is derived from its position and content in the
    session, so the same message, resent as history with every later request, keeps its id."""
    return [
        Message(
            id=stable_id("msg", user.tenant, user.user, session_id, str(turn.index), turn.role, turn.content),
            role=turn.role,
            content=turn.content,
            name=turn.name,
            created_at=at,
            session_id=session_id,
        )
        for turn in turns
    ]


def extraction_job(user: UserRef, session_id: str, messages: list[Message], job_id: str | None = None) -> ExtractionJob:
    """The job for an exchange; by default its id derives from the messages (queued once)."""
    return ExtractionJob(
        id=job_id or stable_id("job", *(m.id for m in messages)),
        user=user,
        session_id=session_id,
        messages=messages,
    )
