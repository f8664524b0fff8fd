"""The SQLite store's schema (numbered migrations) and its row and JSON mappings."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import numpy as np

from salience.model import MemoryItem, Message, UserRef

# Append only: a migration, once released, is never edited. Index = version - 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, id TEXT NOT NULL,
        started_at REAL NOT NULL, last_seen_at REAL NOT NULL,
        PRIMARY KEY (tenant, user_id, id)
    );
    CREATE INDEX sessions_by_recency ON sessions (tenant, user_id, last_seen_at);

    CREATE TABLE messages (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, id TEXT NOT NULL,
        session_id TEXT NOT NULL, role TEXT NOT NULL, name TEXT,
        content TEXT NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (tenant, user_id, id)
    );

    CREATE TABLE memories (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, id TEXT NOT NULL,
        text TEXT NOT NULL, kind TEXT NOT NULL, importance REAL NOT NULL,
        speaker TEXT NOT NULL, created_at REAL NOT NULL, last_reinforced_at REAL,
        mention_count INTEGER NOT NULL DEFAULT 1, pinned INTEGER NOT NULL DEFAULT 0,
        sources TEXT NOT NULL, session_id TEXT, embedding BLOB,
        PRIMARY KEY (tenant, user_id, id)
    );

    CREATE TABLE user_versions (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, version INTEGER NOT NULL,
        PRIMARY KEY (tenant, user_id)
    );

    CREATE TABLE extraction_jobs (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, user_id TEXT NOT NULL,
        session_id TEXT NOT NULL, messages TEXT NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        available_at REAL NOT NULL, leased_until REAL, last_error TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX extraction_jobs_due ON extraction_jobs (status, available_at);

    CREATE TABLE traces (
        tenant TEXT NOT NULL, id TEXT NOT NULL, created_at REAL NOT NULL, payload TEXT NOT NULL,
        PRIMARY KEY (tenant, id)
    );
    """,
    # 2: the safety layer. A user's safety record, and the durable outbox of webhook events.
    """
    CREATE TABLE safety_records (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, record TEXT NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (tenant, user_id)
    );

    CREATE TABLE outbox (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        available_at REAL NOT NULL, leased_until REAL, last_error TEXT,
        created_at REAL NOT NULL, delivered_at REAL
    );
    CREATE INDEX outbox_due ON outbox (status, available_at);
    """,
    # 3: compliance. Which user and which memories and messages a trace holds (so erasure finds
    # it), the per-tenant hash-chained audit log and its head, and per-user wrapped data keys.
    """
    ALTER TABLE traces ADD COLUMN user_id TEXT;
    CREATE INDEX traces_by_user ON traces (tenant, user_id);
    CREATE TABLE trace_refs (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, ref TEXT NOT NULL, trace_id TEXT NOT NULL,
        PRIMARY KEY (tenant, user_id, ref, trace_id)
    );
    CREATE INDEX extraction_jobs_by_user ON extraction_jobs (tenant, user_id);

    CREATE TABLE audit_log (
        tenant TEXT NOT NULL, seq INTEGER NOT NULL, ts TEXT NOT NULL, user_id TEXT, action TEXT NOT NULL,
        ids TEXT NOT NULL, request_id TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
        PRIMARY KEY (tenant, seq)
    );
    CREATE INDEX audit_by_user ON audit_log (tenant, user_id, seq);
    CREATE TABLE audit_heads (tenant TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL);

    CREATE TABLE data_keys (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, wrapped BLOB NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (tenant, user_id)
    );
    """,
    # 4: the person model. Entities (JSON docs) linked to memories, and one signal per user
    # message (mood, topics) from which the arc is computed. All derived, all recomputable.
    """
    CREATE TABLE entities (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, id TEXT NOT NULL,
        doc TEXT NOT NULL, first_seen REAL,
        PRIMARY KEY (tenant, user_id, id)
    );

    CREATE TABLE entity_links (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, entity_id TEXT NOT NULL, memory_id TEXT NOT NULL,
        PRIMARY KEY (tenant, user_id, entity_id, memory_id)
    );
    CREATE INDEX entity_links_by_memory ON entity_links (tenant, user_id, memory_id);

    CREATE TABLE message_signals (
        tenant TEXT NOT NULL, user_id TEXT NOT NULL, message_id TEXT NOT NULL,
        created_at REAL NOT NULL, doc TEXT NOT NULL,
        PRIMARY KEY (tenant, user_id, message_id)
    );
    """,
    # 5: each memory stamped with the user's version its last write made, so a cache holding an
    # older version reads only what was written since (``memory_changes``). Rows written before
    # carry 0: a cache that holds them loaded them in full.
    """
    ALTER TABLE memories ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX memories_by_version ON memories (tenant, user_id, version);
    """,
    # 6: each message signal stamped the same way, so a person model reads only the new ones
    # (``message_signal_changes``). Rows written before carry 0.
    """
    ALTER TABLE message_signals ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX message_signals_by_version ON message_signals (tenant, user_id, version);
    """,
    # 7: traces and finished jobs and events are pruned by age (``sqlite_records``): found by
    # their time, and a trace's references by the trace.
    """
    CREATE INDEX traces_by_age ON traces (created_at);
    CREATE INDEX trace_refs_by_trace ON trace_refs (tenant, trace_id);
    CREATE INDEX extraction_jobs_by_age ON extraction_jobs (status, created_at);
    CREATE INDEX outbox_by_delivery ON outbox (status, delivered_at);
    """,
]


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, timezone.utc) if value is not None else None


def _message_to_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "name": message.name,
        "created_at": message.created_at.timestamp(),
        "session_id": message.session_id,
    }


def _message_from_json(data: dict[str, Any]) -> Message:
    return Message(
        id=data["id"],
        role=data["role"],
        content=data["content"],
        name=data.get("name"),
        created_at=_dt(data["created_at"]),  # type: ignore[arg-type]
        session_id=data["session_id"],
    )


MEMORY_COLUMNS = (
    " (tenant, user_id, id, text, kind, importance, speaker, created_at,"
    " last_reinforced_at, mention_count, pinned, sources, session_id, embedding, version)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _memory_row(user: UserRef, item: MemoryItem, version: int) -> tuple[Any, ...]:
    """The row of ``item``, stamped with the user's ``version`` this write makes."""
    return (
        user.tenant, user.user, item.id, item.text, item.kind, item.importance, item.speaker,
        _ts(item.created_at), _ts(item.last_reinforced_at), item.mention_count, int(item.pinned),
        json.dumps(item.sources), item.session_id,
        item.embedding.astype(np.float32).tobytes() if item.embedding is not None else None,
        version,
    )


def _bump_version(conn: sqlite3.Connection, user: UserRef) -> int:
    """Move the user's version on; returns the new one (the stamp of memories written with it)."""
    # A user's first version is the clock in microseconds, later ones count up: a user erased
    # and seen again never repeats a version an in-process recall cache may still hold.
    return conn.execute(
        "INSERT INTO user_versions (tenant, user_id, version) VALUES (?,?,?)"
        " ON CONFLICT (tenant, user_id) DO UPDATE SET version = version + 1 RETURNING version",
        (user.tenant, user.user, time.time_ns() // 1000),
    ).fetchall()[0][0]


def _user_version(conn: sqlite3.Connection, user: UserRef) -> int:
    row = conn.execute("SELECT version FROM user_versions WHERE tenant=? AND user_id=?", (user.tenant, user.user)).fetchone()
    return row[0] if row else 0


def _written_since(
    conn: sqlite3.Connection, user: UserRef, table: str, columns: str, since: int, limit: int
) -> tuple[int, int, list[sqlite3.Row] | None]:
    """In one snapshot: the user's version, how many rows of ``table`` they have, and ``columns``
    of the rows written after version ``since`` in write order (None when more than ``limit``:
    counted on the version index alone, never read)."""
    args = (user.tenant, user.user)
    with _snapshot(conn):
        version = _user_version(conn, user)
        count = conn.execute(f"SELECT count(*) FROM {table} WHERE tenant=? AND user_id=?", args).fetchone()[0]
        written = conn.execute(
            f"SELECT count(*) FROM {table} WHERE tenant=? AND user_id=? AND version > ?", (*args, since)
        ).fetchone()[0]
        if written > limit:
            return version, count, None
        rows = conn.execute(
            f"SELECT {columns} FROM {table} WHERE tenant=? AND user_id=? AND version > ? ORDER BY rowid", (*args, since)
        ).fetchall()
    return version, count, rows


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: what is read inside agrees (a version and the rows written by then)."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")
