"""The embedded store: one SQLite file in WAL mode, migrations numbered in code.

All access runs on one dedicated thread that owns the connection, so the event loop
never blocks on disk and no two statements interleave inside a transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from salience.model import (
    Entity,
    ExtractionJob,
    MemoryItem,
    Message,
    MessageSignal,
    OutboxEvent,
    SafetyRecord,
    UserRef,
    new_id,
)
from salience.store.sqlite_schema import (
    MEMORY_COLUMNS,
    MIGRATIONS,
    _bump_version,
    _dt,
    _memory_row,
    _message_from_json,
    _message_to_json,
    _ts,
)

T = TypeVar("T")

class SQLiteStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(url.removeprefix("sqlite:///"))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salience-sqlite")
        self._conn: sqlite3.Connection | None = None

    # -- plumbing -------------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "store is not open"
        return fn(self._conn)

    async def open(self) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.row_factory = sqlite3.Row
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            for version, script in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in filter(str.strip, script.split(";")):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {version}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            self._conn = conn

        if self._conn is None:
            await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(lambda conn: conn.close())
            self._conn = None
        self._executor.shutdown(wait=True)

    @staticmethod
    def _transaction(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- sessions and messages --------------------------------------------------------------
    async def resolve_session(
        self, user: UserRef, requested: str | None, now: datetime, inactivity_gap: timedelta
    ) -> str:
        def resolve(conn: sqlite3.Connection) -> str:
            def body() -> str:
                if requested:
                    session_id = requested
                else:
                    row = conn.execute(
                        "SELECT id, last_seen_at FROM sessions WHERE tenant=? AND user_id=?"
                        " ORDER BY last_seen_at DESC LIMIT 1",
                        (user.tenant, user.user),
                    ).fetchone()
                    recent = row is not None and now.timestamp() - row["last_seen_at"] <= inactivity_gap.total_seconds()
                    session_id = row["id"] if recent else new_id("sess")
                conn.execute(
                    "INSERT INTO sessions (tenant, user_id, id, started_at, last_seen_at) VALUES (?,?,?,?,?)"
                    " ON CONFLICT (tenant, user_id, id) DO UPDATE SET"
                    " last_seen_at = max(last_seen_at, excluded.last_seen_at)",
                    (user.tenant, user.user, session_id, now.timestamp(), now.timestamp()),
                )
                return session_id

            return self._transaction(conn, body)

        return await self._run(resolve)

    @staticmethod
    def _insert_messages(conn: sqlite3.Connection, user: UserRef, messages: list[Message]) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO messages (tenant, user_id, id, session_id, role, name, content, created_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            [
                (user.tenant, user.user, m.id, m.session_id, m.role, m.name, m.content, m.created_at.timestamp())
                for m in messages
            ],
        )

    async def add_messages(self, user: UserRef, messages: list[Message]) -> None:
        await self._run(lambda conn: self._transaction(conn, lambda: self._insert_messages(conn, user, messages)))

    # -- memories ---------------------------------------------------------------------------
    @staticmethod
    def _row_to_memory(row: sqlite3.Row, with_embedding: bool) -> MemoryItem:
        embedding = None
        if with_embedding and row["embedding"] is not None:
            embedding = np.frombuffer(row["embedding"], dtype=np.float32)
        return MemoryItem(
            id=row["id"],
            text=row["text"],
            kind=row["kind"],
            importance=row["importance"],
            speaker=row["speaker"],
            created_at=_dt(row["created_at"]),  # type: ignore[arg-type]
            last_reinforced_at=_dt(row["last_reinforced_at"]),
            mention_count=row["mention_count"],
            pinned=bool(row["pinned"]),
            sources=json.loads(row["sources"]),
            session_id=row["session_id"],
            embedding=embedding,
        )

    async def load_memories(self, user: UserRef) -> list[MemoryItem]:
        def load(conn: sqlite3.Connection) -> list[MemoryItem]:
            rows = conn.execute(
                "SELECT * FROM memories WHERE tenant=? AND user_id=? ORDER BY rowid", (user.tenant, user.user)
            ).fetchall()
            return [self._row_to_memory(row, with_embedding=True) for row in rows]

        return await self._run(load)

    async def get_memory(self, user: UserRef, memory_id: str) -> MemoryItem | None:
        def get(conn: sqlite3.Connection) -> MemoryItem | None:
            row = conn.execute(
                "SELECT * FROM memories WHERE tenant=? AND user_id=? AND id=?", (user.tenant, user.user, memory_id)
            ).fetchone()
            return self._row_to_memory(row, with_embedding=False) if row else None

        return await self._run(get)

    async def list_memories(
        self, user: UserRef, limit: int, after: str | None = None
    ) -> tuple[list[MemoryItem], bool]:
        def page(conn: sqlite3.Connection) -> tuple[list[MemoryItem], bool]:
            start = 0
            if after:
                row = conn.execute(
                    "SELECT rowid FROM memories WHERE tenant=? AND user_id=? AND id=?", (user.tenant, user.user, after)
                ).fetchone()
                start = row[0] if row else 0
            rows = conn.execute(
                "SELECT * FROM memories WHERE tenant=? AND user_id=? AND rowid > ? ORDER BY rowid LIMIT ?",
                (user.tenant, user.user, start, limit + 1),
            ).fetchall()
            items = [self._row_to_memory(row, with_embedding=False) for row in rows[:limit]]
            return items, len(rows) > limit

        return await self._run(page)

    async def memory_version(self, user: UserRef) -> int:
        def version(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT version FROM user_versions WHERE tenant=? AND user_id=?", (user.tenant, user.user)
            ).fetchone()
            return row[0] if row else 0

        return await self._run(version)

    async def delete_memory(self, user: UserRef, memory_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            def body() -> bool:
                cursor = conn.execute(
                    "DELETE FROM memories WHERE tenant=? AND user_id=? AND id=?", (user.tenant, user.user, memory_id)
                )
                if cursor.rowcount:
                    self._unlink_memory(conn, user, memory_id)
                    _bump_version(conn, user)
                return cursor.rowcount > 0

            return self._transaction(conn, body)

        return await self._run(delete)

    # -- the person model: entities and message signals ---------------------------------------
    @staticmethod
    def _unlink_memory(conn: sqlite3.Connection, user: UserRef, memory_id: str) -> None:
        conn.execute(
            "DELETE FROM entity_links WHERE tenant=? AND user_id=? AND memory_id=?", (user.tenant, user.user, memory_id)
        )
        conn.execute(
            "DELETE FROM entities WHERE tenant=? AND user_id=? AND NOT EXISTS (SELECT 1 FROM entity_links l"
            " WHERE l.tenant=entities.tenant AND l.user_id=entities.user_id AND l.entity_id=entities.id)",
            (user.tenant, user.user),
        )

    async def unlink_memory(self, user: UserRef, memory_id: str) -> None:
        def unlink(conn: sqlite3.Connection) -> None:
            def body() -> None:
                self._unlink_memory(conn, user, memory_id)
                _bump_version(conn, user)

            self._transaction(conn, body)

        await self._run(unlink)

    async def save_entities(self, user: UserRef, entities: list[Entity], links: list[tuple[str, str]]) -> None:
        def save(conn: sqlite3.Connection) -> None:
            def body() -> None:
                for entity in entities:
                    row = conn.execute(
                        "SELECT doc FROM entities WHERE tenant=? AND user_id=? AND id=?", (user.tenant, user.user, entity.id)
                    ).fetchone()
                    doc = entity.to_json()
                    if row is not None:
                        stored = json.loads(row[0])
                        doc["aliases"] = list(dict.fromkeys([*stored.get("aliases", []), *entity.aliases]))
                    conn.execute(
                        "INSERT OR REPLACE INTO entities (tenant, user_id, id, doc, first_seen) VALUES (?,?,?,?,?)",
                        (user.tenant, user.user, entity.id, json.dumps(doc), doc["first_seen"]),
                    )
                conn.executemany(
                    "INSERT OR IGNORE INTO entity_links (tenant, user_id, entity_id, memory_id) VALUES (?,?,?,?)",
                    [(user.tenant, user.user, entity_id, memory_id) for entity_id, memory_id in links],
                )
                if entities or links:
                    _bump_version(conn, user)

            self._transaction(conn, body)

        await self._run(save)

    async def load_entities(self, user: UserRef) -> list[Entity]:
        def load(conn: sqlite3.Connection) -> list[Entity]:
            links: dict[str, list[str]] = {}
            for row in conn.execute(
                "SELECT entity_id, memory_id FROM entity_links WHERE tenant=? AND user_id=? ORDER BY rowid",
                (user.tenant, user.user),
            ):
                links.setdefault(row[0], []).append(row[1])
            rows = conn.execute(
                "SELECT id, doc FROM entities WHERE tenant=? AND user_id=? ORDER BY first_seen, rowid",
                (user.tenant, user.user),
            ).fetchall()
            return [Entity.from_json(json.loads(row[1]), links.get(row[0], [])) for row in rows]

        return await self._run(load)

    async def save_message_signals(self, user: UserRef, signals: list[MessageSignal]) -> None:
        def save(conn: sqlite3.Connection) -> None:
            def body() -> None:
                conn.executemany(
                    "INSERT OR REPLACE INTO message_signals (tenant, user_id, message_id, created_at, doc) VALUES (?,?,?,?,?)",
                    [
                        (user.tenant, user.user, s.message_id, s.created_at.timestamp(), json.dumps(s.to_json()))
                        for s in signals
                    ],
                )
                if signals:
                    _bump_version(conn, user)

            self._transaction(conn, body)

        await self._run(save)

    async def load_message_signals(self, user: UserRef) -> list[MessageSignal]:
        def load(conn: sqlite3.Connection) -> list[MessageSignal]:
            rows = conn.execute(
                "SELECT doc FROM message_signals WHERE tenant=? AND user_id=? ORDER BY created_at, rowid",
                (user.tenant, user.user),
            ).fetchall()
            return [MessageSignal.from_json(json.loads(row[0])) for row in rows]

        return await self._run(load)

    # -- safety -----------------------------------------------------------------------------------
    async def get_safety_record(self, user: UserRef) -> SafetyRecord | None:
        def get(conn: sqlite3.Connection) -> SafetyRecord | None:
            row = conn.execute(
                "SELECT record FROM safety_records WHERE tenant=? AND user_id=?", (user.tenant, user.user)
            ).fetchone()
            return SafetyRecord.from_json(json.loads(row[0])) if row else None

        return await self._run(get)

    async def save_safety_update(
        self, user: UserRef, record: SafetyRecord, pinned: list[MemoryItem], events: list[OutboxEvent], now: datetime
    ) -> None:
        def save(conn: sqlite3.Connection) -> None:
            def body() -> None:
                conn.execute(
                    "INSERT INTO safety_records (tenant, user_id, record, updated_at) VALUES (?,?,?,?)"
                    " ON CONFLICT (tenant, user_id) DO UPDATE SET record=excluded.record, updated_at=excluded.updated_at",
                    (user.tenant, user.user, json.dumps(record.to_json()), now.timestamp()),
                )
                if pinned:
                    conn.executemany("INSERT OR REPLACE INTO memories" + MEMORY_COLUMNS, [_memory_row(user, m) for m in pinned])
                    _bump_version(conn, user)
                for event in events:
                    self._insert_event(conn, event, now)

            self._transaction(conn, body)

        await self._run(save)

    # -- the outbox -------------------------------------------------------------------------------
    @staticmethod
    def _insert_event(conn: sqlite3.Connection, event: OutboxEvent, now: datetime) -> bool:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO outbox (id, tenant, kind, payload, status, attempts, available_at, created_at)"
            " VALUES (?,?,?,?,'queued',0,?,?)",
            (event.id, event.tenant, event.kind, json.dumps(event.payload), now.timestamp(), event.created_at.timestamp()),
        )
        return cursor.rowcount == 1

    async def enqueue_outbox(self, event: OutboxEvent, now: datetime) -> bool:
        return await self._run(lambda conn: self._insert_event(conn, event, now))

    async def claim_outbox(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEvent]:
        def claim(conn: sqlite3.Connection) -> list[OutboxEvent]:
            def body() -> list[OutboxEvent]:
                rows = conn.execute(
                    "SELECT * FROM outbox WHERE"
                    " (status='queued' AND available_at <= ?) OR (status='leased' AND leased_until <= ?)"
                    " ORDER BY available_at LIMIT ?",
                    (now.timestamp(), now.timestamp(), limit),
                ).fetchall()
                for row in rows:
                    conn.execute(
                        "UPDATE outbox SET status='leased', leased_until=?, attempts=attempts+1 WHERE id=?",
                        ((now + lease).timestamp(), row["id"]),
                    )
                return [
                    OutboxEvent(
                        id=row["id"], tenant=row["tenant"], kind=row["kind"], payload=json.loads(row["payload"]),
                        created_at=_dt(row["created_at"]), attempts=row["attempts"] + 1,  # type: ignore[arg-type]
                    )
                    for row in rows
                ]

            return self._transaction(conn, body)

        return await self._run(claim)

    async def ack_outbox(self, event_id: str, now: datetime) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE outbox SET status='delivered', leased_until=NULL, delivered_at=? WHERE id=?",
                (now.timestamp(), event_id),
            )
        )

    async def retry_outbox(self, event_id: str, error: str, available_at: datetime | None) -> None:
        status = "queued" if available_at is not None else "failed"
        due = available_at.timestamp() if available_at is not None else 0.0
        await self._run(
            lambda conn: conn.execute(
                "UPDATE outbox SET status=?, leased_until=NULL, last_error=?, available_at=? WHERE id=? AND status='leased'",
                (status, error[:500], due, event_id),
            )
        )

    async def pending_outbox(self, tenant: str | None = None) -> int:
        def count(conn: sqlite3.Connection) -> int:
            if tenant is None:
                return conn.execute("SELECT count(*) FROM outbox WHERE status IN ('queued', 'leased')").fetchone()[0]
            return conn.execute(
                "SELECT count(*) FROM outbox WHERE status IN ('queued', 'leased') AND tenant=?", (tenant,)
            ).fetchone()[0]

        return await self._run(count)

    # -- the extraction queue -----------------------------------------------------------------
    async def enqueue_extraction(self, job: ExtractionJob, now: datetime) -> bool:
        def enqueue(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO extraction_jobs"
                " (id, tenant, user_id, session_id, messages, status, attempts, available_at, created_at)"
                " VALUES (?,?,?,?,?,'queued',0,?,?)",
                (
                    job.id,
                    job.user.tenant,
                    job.user.user,
                    job.session_id,
                    json.dumps([_message_to_json(m) for m in job.messages]),
                    now.timestamp(),
                    now.timestamp(),
                ),
            )
            return cursor.rowcount == 1

        return await self._run(enqueue)

    async def claim_extraction_jobs(self, limit: int, now: datetime, lease: timedelta) -> list[ExtractionJob]:
        def claim(conn: sqlite3.Connection) -> list[ExtractionJob]:
            def body() -> list[ExtractionJob]:
                rows = conn.execute(
                    "SELECT * FROM extraction_jobs WHERE"
                    " (status='queued' AND available_at <= ?) OR (status='leased' AND leased_until <= ?)"
                    " ORDER BY available_at LIMIT ?",
                    (now.timestamp(), now.timestamp(), limit),
                ).fetchall()
                jobs = []
                for row in rows:
                    conn.execute(
                        "UPDATE extraction_jobs SET status='leased', leased_until=?, attempts=attempts+1 WHERE id=?",
                        ((now + lease).timestamp(), row["id"]),
                    )
                    jobs.append(
                        ExtractionJob(
                            id=row["id"],
                            user=UserRef(row["tenant"], row["user_id"]),
                            session_id=row["session_id"],
                            messages=[_message_from_json(m) for m in json.loads(row["messages"])],
                            attempts=row["attempts"] + 1,
                        )
                    )
                return jobs

            return self._transaction(conn, body)

        return await self._run(claim)

    async def commit_extraction(
        self, job: ExtractionJob, added: list[MemoryItem], reinforced: list[MemoryItem]
    ) -> None:
        user = job.user

        def commit(conn: sqlite3.Connection) -> None:
            def body() -> None:
                done = conn.execute("SELECT status FROM extraction_jobs WHERE id=?", (job.id,)).fetchone()
                if done is not None and done["status"] == "done":
                    return  # another worker finished it first: applying twice would double-count
                self._insert_messages(conn, user, job.messages)
                conn.executemany(
                    "INSERT OR IGNORE INTO memories" + MEMORY_COLUMNS,
                    [_memory_row(user, item) for item in added],
                )
                conn.executemany(
                    "UPDATE memories SET mention_count=?, last_reinforced_at=?, sources=?, importance=?"
                    " WHERE tenant=? AND user_id=? AND id=?",
                    [
                        (
                            item.mention_count, _ts(item.last_reinforced_at), json.dumps(item.sources),
                            item.importance, user.tenant, user.user, item.id,
                        )
                        for item in reinforced
                    ],
                )
                if added or reinforced:
                    _bump_version(conn, user)
                conn.execute("UPDATE extraction_jobs SET status='done', leased_until=NULL WHERE id=?", (job.id,))

            self._transaction(conn, body)

        await self._run(commit)

    async def retry_extraction(self, job_id: str, error: str, available_at: datetime | None) -> None:
        status = "queued" if available_at is not None else "failed"
        due = available_at.timestamp() if available_at is not None else 0.0
        await self._run(
            lambda conn: conn.execute(
                "UPDATE extraction_jobs SET status=?, leased_until=NULL, last_error=?, available_at=?"
                " WHERE id=? AND status='leased'",
                (status, error[:500], due, job_id),
            )
        )

    async def pending_extractions(self, user: UserRef | None = None) -> int:
        def count(conn: sqlite3.Connection) -> int:
            if user is None:
                return conn.execute("SELECT count(*) FROM extraction_jobs WHERE status IN ('queued', 'leased')").fetchone()[0]
            return conn.execute(
                "SELECT count(*) FROM extraction_jobs WHERE status IN ('queued', 'leased') AND tenant=? AND user_id=?",
                (user.tenant, user.user),
            ).fetchone()[0]

        return await self._run(count)

    # -- traces -----------------------------------------------------------------------------------
    async def save_trace(self, tenant: str, trace_id: str, payload: dict[str, Any], now: datetime) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO traces (tenant, id, created_at, payload) VALUES (?,?,?,?)",
                (tenant, trace_id, now.timestamp(), json.dumps(payload)),
            )
        )

    async def get_trace(self, tenant: str, trace_id: str) -> dict[str, Any] | None:
        def get(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT payload FROM traces WHERE tenant=? AND id=?", (tenant, trace_id)).fetchone()
            return json.loads(row[0]) if row else None

        return await self._run(get)
