"""What the Redis store's modules share: key names, the connection-error decorator and the
encoding of memories as Redis hashes."""

from __future__ import annotations

import functools
import json
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, ParamSpec, TypeVar

import numpy as np
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from salience.model import (
    MemoryItem,
    UserRef,
)
from salience.store.base import FINISHED_KEPT, GIVEN_UP_KEPT, StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")

GROUP = "workers"
DONE_TTL = int(FINISHED_KEPT.total_seconds())  # how long a job id stays "seen" for idempotency
FAILED_TTL = int(GIVEN_UP_KEPT.total_seconds())  # a given-up job stays for inspection
TRACE_TTL = int(FINISHED_KEPT.total_seconds())
QUEUE = "salience:{queue}"
OUTBOX = "salience:{outbox}"
CONSUMER_IDLE_MS = 3_600_000


def _escape(part: str) -> str:
    # Braces would end the hash tag early and ':' separates tenant from user.
    return part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D").replace(":", "%3A")


def user_prefix(user: UserRef) -> str:
    return f"salience:{{{_escape(user.tenant)}:{_escape(user.user)}}}"


def _unavailable_on_connection_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Redis being down surfaces as ``StoreUnavailable``, which the request path degrades on."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    return wrapper


def _float(value: bytes | None) -> float | None:
    return float(value) if value not in (None, b"") else None


def _dt(value: bytes | None) -> datetime | None:
    seconds = _float(value)
    return datetime.fromtimestamp(seconds, timezone.utc) if seconds is not None else None


def _memory_fields(item: MemoryItem) -> list[Any]:
    fields: list[Any] = [
        "text", item.text, "kind", item.kind, "imp", repr(float(item.importance)), "spk", item.speaker,
        "at", repr(item.created_at.timestamp()),
        "rat", repr(item.last_reinforced_at.timestamp()) if item.last_reinforced_at else "",
        "n", item.mention_count, "pin", int(item.pinned), "src", json.dumps(item.sources),
        "sess", item.session_id or "",
    ]
    if item.embedding is not None:
        fields += ["emb", item.embedding.astype(np.float32).tobytes()]
    return fields


def _reinforcement_fields(item: MemoryItem) -> list[Any]:
    return [
        "n", item.mention_count, "src", json.dumps(item.sources), "imp", repr(float(item.importance)),
        "rat", repr(item.last_reinforced_at.timestamp()) if item.last_reinforced_at else "",
    ]


def _memory_from_hash(memory_id: str, data: dict[bytes, bytes], with_embedding: bool) -> MemoryItem:
    embedding = None
    if with_embedding and data.get(b"emb"):
        embedding = np.frombuffer(data[b"emb"], dtype=np.float32)
    return MemoryItem(
        id=memory_id,
        text=data[b"text"].decode(),
        kind=data[b"kind"].decode(),  # type: ignore[arg-type]
        importance=float(data[b"imp"]),
        speaker=data[b"spk"].decode(),
        created_at=_dt(data[b"at"]),  # type: ignore[arg-type]
        last_reinforced_at=_dt(data.get(b"rat")),
        mention_count=int(data[b"n"]),
        pinned=data.get(b"pin") == b"1",
        sources=json.loads(data[b"src"]),
        session_id=data[b"sess"].decode() or None,
        embedding=embedding,
    )


def _glob(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _unescape(part: str) -> str:
    return part.replace("%3A", ":").replace("%7D", "}").replace("%7B", "{").replace("%25", "%")
