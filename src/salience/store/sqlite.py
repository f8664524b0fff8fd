"""The embedded store: one SQLite file in WAL mode, migrations numbered in code.

All access runs on one dedicated thread that owns the connection, so the event loop
never blocks on disk and no two statements interleave inside a transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from salience.model import (
    GENESIS_HASH,
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
    UserRef,
    chain_entry,
    new_id,
)
from salience.store.base import FieldCipher, MasterKeyMissing, looks_sealed
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
# a session's last_seen_at is rewritten only when older than this (see ``_current_session``)
LAST_SEEN_GRANULARITY = timedelta(seconds=30)

class SQLiteStore:
    def __init__(self, url: str, cipher: FieldCipher | None = None) -> None:
        self.url = url
        self.cipher = cipher
        self._keys: dict[UserRef, bytes] = {}  # unwrapped data keys, only ever touched on the store thread
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
            # Deleted content is overwritten with zeros, not left in free pages: erasure is real.
            conn.execute("PRAGMA secure_delete=ON")
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

    def _transaction(self, conn: sqlite3.Connection, body: Callable[[], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body()
        except BaseException:
            conn.execute("ROLLBACK")
            self._keys.clear()  # a data key created in this transaction was rolled back too
            raise
        conn.execute("COMMIT")
        return result

    # -- encryption at rest: every text field through the user's data key ------------------------
    def _key(self, conn: sqlite3.Connection, user: UserRef, create: bool) -> bytes | None:
        if self.cipher is None or not self.cipher.encrypts(user.tenant):
            return None
        key = self._keys.get(user)
        if key is None:
            row = conn.execute(
                "SELECT wrapped FROM data_keys WHERE tenant=? AND user_id=?", (user.tenant, user.user)
            ).fetchone()
            if row is None:
                if not create:
                    return None
                wrapped = self.cipher.new_wrapped_key(user.tenant)
                conn.execute(
                    "INSERT INTO data_keys (tenant, user_id, wrapped, created_at) VALUES (?,?,?,?)",
                    (user.tenant, user.user, wrapped, time.time()),
                )
            else:
                wrapped = row[0]
            key = self._keys[user] = self.cipher.unwrap(user.tenant, wrapped)
        return key

    def _seal(self, conn: sqlite3.Connection, user: UserRef, text: str | None, field: str) -> str | None:
        key = self._key(conn, user, create=True)
        if key is None or text is None or self.cipher is None:
            return text
        return self.cipher.seal(key, text, f"{user.tenant}\x1f{user.user}\x1f{field}")

    def _unseal(self, conn: sqlite3.Connection, user: UserRef, text: str | None, field: str) -> str | None:
        if text is None or not looks_sealed(text):
            return text  # written in clear (a tenant without a master key)
        key = self._key(conn, user, create=False)
        if key is None or self.cipher is None:
            raise MasterKeyMissing(user.tenant)
        return self.cipher.open(key, text, f"{user.tenant}\x1f{user.user}\x1f{field}")

    def _seal_memory(self, conn: sqlite3.Connection, user: UserRef, item: MemoryItem) -> MemoryItem:
        return replace(item, text=self._seal(conn, user, item.text, "memory"), speaker=self._seal(conn, user, item.speaker, "speaker"))

    def _seal_message(self, conn: sqlite3.Connection, user: UserRef, message: Message) -> Message:
        return replace(
            message, content=self._seal(conn, user, message.content, "message"),
            name=self._seal(conn, user, message.name, "name"),
        )

    def _unseal_message(self, conn: sqlite3.Connection, user: UserRef, message: Message) -> Message:
        return replace(
            message, content=self._unseal(conn, user, message.content, "message"),
            name=self._unseal(conn, user, message.name, "name"),
        )

    # -- sessions and messages --------------------------------------------------------------
    async def resolve_session(
        self, user: UserRef, requested: str | None, now: datetime, inactivity_gap: timedelta
    ) -> str:
        def resolve(conn: sqlite3.Connection) -> str:
            current = self._current_session(conn, user, requested, now, inactivity_gap)
            if current is not None:
                return current

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

    def _current_session(
        self, conn: sqlite3.Connection, user: UserRef, requested: str | None, now: datetime, inactivity_gap: timedelta
    ) -> str | None:
        """The session to continue when its ``last_seen_at`` is fresh enough to leave as it is:
        most turns then resolve with a read, and take no write lock that the extraction worker's
        commits may be holding (a write here cost 1.5 ms p50, 3.9 ms p90 on the reply path with
        the worker busy, against 0.5 / 1.0 without it). The inactivity gap is measured from a
        ``last_seen_at`` at most ``LAST_SEEN_GRANULARITY`` old."""
        if requested:
            row = conn.execute(
                "SELECT id, last_seen_at FROM sessions WHERE tenant=? AND user_id=? AND id=?",
                (user.tenant, user.user, requested),
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT id, last_seen_at FROM sessions WHERE tenant=? AND user_id=? ORDER BY last_seen_at DESC LIMIT 1",
                (user.tenant, user.user),
            ).fetchone()
        if row is None:
            return None
        age = now.timestamp() - row["last_seen_at"]
        if age > LAST_SEEN_GRANULARITY.total_seconds() or (not requested and age > inactivity_gap.total_seconds()):
            return None
        return str(row["id"])

    def _insert_messages(self, conn: sqlite3.Connection, user: UserRef, messages: list[Message]) -> None:
        messages = [self._seal_message(conn, user, m) for m in messages]
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
    def _row_to_memory(self, conn: sqlite3.Connection, user: UserRef, row: sqlite3.Row, with_embedding: bool) -> MemoryItem:
        embedding = None
        if with_embedding and row["embedding"] is not None:
            embedding = np.frombuffer(row["embedding"], dtype=np.float32)
        return MemoryItem(
            id=row["id"],
            text=self._unseal(conn, user, row["text"], "memory"),  # type: ignore[arg-type]
            kind=row["kind"],
            importance=row["importance"],
            speaker=self._unseal(conn, user, row["speaker"], "speaker"),  # type: ignore[arg-type]
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
            return [self._row_to_memory(conn, user, row, with_embedding=True) for row in rows]

        return await self._run(load)

    async def get_memory(self, user: UserRef, memory_id: str) -> MemoryItem | None:
        def get(conn: sqlite3.Connection) -> MemoryItem | None:
            row = conn.execute(
                "SELECT * FROM memories WHERE tenant=? AND user_id=? AND id=?", (user.tenant, user.user, memory_id)
            ).fetchone()
            return self._row_to_memory(conn, user, row, with_embedding=False) if row else None

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
            items = [self._row_to_memory(conn, user, row, with_embedding=False) for row in rows[:limit]]
            return items, len(rows) > limit

        return await self._run(page)

    async def existing_memory_ids(self, user: UserRef, memory_ids: list[str]) -> set[str]:
        def existing(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(memory_ids), 500):  # within SQLite's bound-parameter limit
                chunk = memory_ids[start:start + 500]
                found.update(row[0] for row in conn.execute(
                    f"SELECT id FROM memories WHERE tenant=? AND user_id=? AND id IN ({','.join('?' * len(chunk))})",
                    (user.tenant, user.user, *chunk),
                ))
            return found

        return await self._run(existing) if memory_ids else set()

    async def memory_version(self, user: UserRef) -> int:
        def version(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT version FROM user_versions WHERE tenant=? AND user_id=?", (user.tenant, user.user)
            ).fetchone()
            return row[0] if row else 0

        return await self._run(version)

    async def memory_changes(self, user: UserRef, since: int, limit: int) -> MemoryChanges:
        def changes(conn: sqlite3.Connection) -> MemoryChanges:
            args = (user.tenant, user.user)
            conn.execute("BEGIN")  # one snapshot: the version, the count and the rows agree
            try:
                row = conn.execute("SELECT version FROM user_versions WHERE tenant=? AND user_id=?", args).fetchone()
                count = conn.execute("SELECT count(*) FROM memories WHERE tenant=? AND user_id=?", args).fetchone()[0]
                written = conn.execute(  # the index alone: too many are not read
                    "SELECT count(*) FROM memories WHERE tenant=? AND user_id=? AND version > ?", (*args, since)
                ).fetchone()[0]
                changed = None
                if written <= limit:
                    rows = conn.execute(
                        "SELECT * FROM memories WHERE tenant=? AND user_id=? AND version > ? ORDER BY rowid",
                        (*args, since),
                    ).fetchall()
                    changed = [self._row_to_memory(conn, user, r, with_embedding=True) for r in rows]
            finally:
                conn.execute("COMMIT")
            return MemoryChanges(row[0] if row else 0, count, changed)

        return await self._run(changes)

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
    def _unlink_memory(conn: sqlite3.Connection, user: UserRef, memory_id: str) -> tuple[int, int]:
        """Drop the memory's entity links and every entity left without a memory: (links, entities)."""
        links = conn.execute(
            "DELETE FROM entity_links WHERE tenant=? AND user_id=? AND memory_id=?", (user.tenant, user.user, memory_id)
        ).rowcount
        entities = conn.execute(
            "DELETE FROM entities WHERE tenant=? AND user_id=? AND NOT EXISTS (SELECT 1 FROM entity_links l"
            " WHERE l.tenant=entities.tenant AND l.user_id=entities.user_id AND l.entity_id=entities.id)",
            (user.tenant, user.user),
        ).rowcount
        return links, entities

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
                        stored = json.loads(self._unseal(conn, user, row[0], "entity") or "{}")
                        doc["aliases"] = list(dict.fromkeys([*stored.get("aliases", []), *entity.aliases]))
                    conn.execute(
                        "INSERT OR REPLACE INTO entities (tenant, user_id, id, doc, first_seen) VALUES (?,?,?,?,?)",
                        (user.tenant, user.user, entity.id, self._seal(conn, user, json.dumps(doc), "entity"), doc["first_seen"]),
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
            return [
                Entity.from_json(json.loads(self._unseal(conn, user, row[1], "entity") or "{}"), links.get(row[0], []))
                for row in rows
            ]

        return await self._run(load)

    async def save_message_signals(self, user: UserRef, signals: list[MessageSignal]) -> None:
        def save(conn: sqlite3.Connection) -> None:
            def body() -> None:
                conn.executemany(
                    "INSERT OR REPLACE INTO message_signals (tenant, user_id, message_id, created_at, doc) VALUES (?,?,?,?,?)",
                    [
                        (user.tenant, user.user, s.message_id, s.created_at.timestamp(),
                         self._seal(conn, user, json.dumps(s.to_json()), "signal"))
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
            return [MessageSignal.from_json(json.loads(self._unseal(conn, user, row[0], "signal") or "{}")) for row in rows]

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
                    version = _bump_version(conn, user)
                    conn.executemany(
                        "INSERT OR REPLACE INTO memories" + MEMORY_COLUMNS,
                        [_memory_row(user, self._seal_memory(conn, user, m), version) for m in pinned],
                    )
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
            sealed = [self._seal_message(conn, job.user, m) for m in job.messages]
            cursor = conn.execute(
                "INSERT OR IGNORE INTO extraction_jobs"
                " (id, tenant, user_id, session_id, messages, status, attempts, available_at, created_at)"
                " VALUES (?,?,?,?,?,'queued',0,?,?)",
                (
                    job.id,
                    job.user.tenant,
                    job.user.user,
                    job.session_id,
                    json.dumps([_message_to_json(m) for m in sealed]),
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
                    owner = UserRef(row["tenant"], row["user_id"])
                    jobs.append(
                        ExtractionJob(
                            id=row["id"],
                            user=owner,
                            session_id=row["session_id"],
                            messages=[
                                self._unseal_message(conn, owner, _message_from_json(m)) for m in json.loads(row["messages"])
                            ],
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
                if done is None and job.attempts > 0:
                    return  # a claimed job whose row is gone: erased while it was being processed
                self._insert_messages(conn, user, job.messages)
                version = _bump_version(conn, user) if added or reinforced else 0
                conn.executemany(
                    "INSERT OR IGNORE INTO memories" + MEMORY_COLUMNS,
                    [_memory_row(user, self._seal_memory(conn, user, item), version) for item in added],
                )
                conn.executemany(
                    "UPDATE memories SET mention_count=?, last_reinforced_at=?, sources=?, importance=?, version=?"
                    " WHERE tenant=? AND user_id=? AND id=?",
                    [
                        (
                            item.mention_count, _ts(item.last_reinforced_at), json.dumps(item.sources),
                            item.importance, version, user.tenant, user.user, item.id,
                        )
                        for item in reinforced
                    ],
                )
                # A done job keeps only its id (idempotency): its messages now live in ``messages``.
                conn.execute(
                    "UPDATE extraction_jobs SET status='done', leased_until=NULL, messages='[]' WHERE id=?", (job.id,)
                )

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
    async def save_trace(
        self, tenant: str, trace_id: str, payload: dict[str, Any], now: datetime, refs: list[str] | None = None
    ) -> None:
        user_id = payload.get("user")

        def save(conn: sqlite3.Connection) -> None:
            def body() -> None:
                text = json.dumps(payload)
                if user_id is not None:
                    text = self._seal(conn, UserRef(tenant, user_id), text, "trace")  # type: ignore[assignment]
                conn.execute(
                    "INSERT OR REPLACE INTO traces (tenant, id, created_at, payload, user_id) VALUES (?,?,?,?,?)",
                    (tenant, trace_id, now.timestamp(), text, user_id),
                )
                if user_id is not None:
                    conn.executemany(
                        "INSERT OR IGNORE INTO trace_refs (tenant, user_id, ref, trace_id) VALUES (?,?,?,?)",
                        [(tenant, user_id, ref, trace_id) for ref in dict.fromkeys(refs or [])],
                    )

            self._transaction(conn, body)

        await self._run(save)

    async def get_trace(self, tenant: str, trace_id: str) -> dict[str, Any] | None:
        def get(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                "SELECT payload, user_id FROM traces WHERE tenant=? AND id=?", (tenant, trace_id)
            ).fetchone()
            if row is None:
                return None
            text = row[0] if row[1] is None else self._unseal(conn, UserRef(tenant, row[1]), row[0], "trace")
            return json.loads(text)  # type: ignore[arg-type]

        return await self._run(get)

    # -- compliance: erasure, export, audit -------------------------------------------------------
    async def user_exists(self, user: UserRef) -> bool:
        def exists(conn: sqlite3.Connection) -> bool:
            args = (user.tenant, user.user)
            return any(
                conn.execute(f"SELECT 1 FROM {table} WHERE tenant=? AND user_id=? LIMIT 1", args).fetchone()
                for table in ("sessions", "memories", "messages", "safety_records")
            )

        return await self._run(exists)

    async def load_messages(self, user: UserRef, message_ids: list[str]) -> list[Message]:
        def load(conn: sqlite3.Connection) -> list[Message]:
            found = []
            for message_id in dict.fromkeys(message_ids):
                row = conn.execute(
                    "SELECT * FROM messages WHERE tenant=? AND user_id=? AND id=?", (user.tenant, user.user, message_id)
                ).fetchone()
                if row is not None:
                    found.append(
                        self._unseal_message(
                            conn, user,
                            Message(id=row["id"], role=row["role"], content=row["content"], name=row["name"],
                                    created_at=_dt(row["created_at"]), session_id=row["session_id"]),  # type: ignore[arg-type]
                        )
                    )
            return found

        return await self._run(load)

    @staticmethod
    def _erase_traces(conn: sqlite3.Connection, user: UserRef, refs: list[str]) -> int:
        trace_ids: set[str] = set()
        for ref in refs:
            trace_ids.update(
                row[0] for row in conn.execute(
                    "SELECT trace_id FROM trace_refs WHERE tenant=? AND user_id=? AND ref=?", (user.tenant, user.user, ref)
                )
            )
        for trace_id in trace_ids:
            conn.execute("DELETE FROM traces WHERE tenant=? AND id=?", (user.tenant, trace_id))
            conn.execute("DELETE FROM trace_refs WHERE tenant=? AND trace_id=?", (user.tenant, trace_id))
        return len(trace_ids)

    def _reclaim(self, conn: sqlite3.Connection, vacuum: bool) -> None:
        # secure_delete zeroed the freed pages; the checkpoint moves that into the main file and
        # empties the WAL, which still held the old pages. VACUUM rebuilds the file without them.
        if vacuum:
            conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def erase_memory(self, user: UserRef, memory_id: str, now: datetime) -> ErasureReceipt | None:
        def erase(conn: sqlite3.Connection) -> ErasureReceipt | None:
            def body() -> ErasureReceipt | None:
                row = conn.execute(
                    "SELECT sources, embedding FROM memories WHERE tenant=? AND user_id=? AND id=?",
                    (user.tenant, user.user, memory_id),
                ).fetchone()
                if row is None:
                    return None
                receipt = ErasureReceipt(user, now, memory_id, {"messages": 0, "extraction_jobs": 0})
                sources: list[str] = json.loads(row["sources"])
                conn.execute("DELETE FROM memories WHERE tenant=? AND user_id=? AND id=?", (user.tenant, user.user, memory_id))
                receipt.count("memories", 1)
                receipt.count("embeddings", row["embedding"] is not None)
                # The messages it was extracted from hold the same words.
                for source in sources:
                    receipt.count("messages", conn.execute(
                        "DELETE FROM messages WHERE tenant=? AND user_id=? AND id=?", (user.tenant, user.user, source)
                    ).rowcount)
                # Jobs still holding those messages would extract it again.
                for job in conn.execute(
                    "SELECT id, status, messages FROM extraction_jobs WHERE tenant=? AND user_id=? AND messages != '[]'",
                    (user.tenant, user.user),
                ).fetchall():
                    if {m["id"] for m in json.loads(job["messages"])} & set(sources):
                        conn.execute("DELETE FROM extraction_jobs WHERE id=?", (job["id"],))
                        receipt.count("extraction_jobs", 1)
                receipt.count("traces", self._erase_traces(conn, user, [memory_id, *sources]))
                receipt.count("safety_references", self._forget_in_safety_record(conn, user, set(sources)))
                # Entities: its links, and any entity it was the last memory of. The arc: the
                # signals (mood, topics) of the messages it came from.
                links, entities = self._unlink_memory(conn, user, memory_id)
                receipt.count("entity_links", links)
                receipt.count("entities", entities)
                for source in sources:
                    receipt.count("message_signals", conn.execute(
                        "DELETE FROM message_signals WHERE tenant=? AND user_id=? AND message_id=?",
                        (user.tenant, user.user, source),
                    ).rowcount)
                _bump_version(conn, user)
                return receipt

            receipt = self._transaction(conn, body)
            if receipt is not None:
                self._reclaim(conn, vacuum=False)
            return receipt

        return await self._run(erase)

    @staticmethod
    def _forget_in_safety_record(conn: sqlite3.Connection, user: UserRef, message_ids: set[str]) -> int:
        row = conn.execute(
            "SELECT record FROM safety_records WHERE tenant=? AND user_id=?", (user.tenant, user.user)
        ).fetchone()
        if row is None:
            return 0
        record = json.loads(row[0])
        kept = [m for m in record.get("seen_message_ids", []) if m not in message_ids]
        removed = len(record.get("seen_message_ids", [])) - len(kept)
        if removed:
            record["seen_message_ids"] = kept
            conn.execute(
                "UPDATE safety_records SET record=? WHERE tenant=? AND user_id=?",
                (json.dumps(record), user.tenant, user.user),
            )
        return removed

    async def erase_user(self, user: UserRef, now: datetime) -> ErasureReceipt:
        def erase(conn: sqlite3.Connection) -> ErasureReceipt:
            def body() -> ErasureReceipt:
                receipt = ErasureReceipt(user, now)
                args = (user.tenant, user.user)
                receipt.count("embeddings", conn.execute(
                    "SELECT count(*) FROM memories WHERE tenant=? AND user_id=? AND embedding IS NOT NULL", args
                ).fetchone()[0])
                for kind, table in (
                    ("memories", "memories"), ("messages", "messages"), ("sessions", "sessions"),
                    ("extraction_jobs", "extraction_jobs"), ("traces", "traces"), ("safety_records", "safety_records"),
                    ("data_keys", "data_keys"), ("versions", "user_versions"), ("trace_refs", "trace_refs"),
                    ("entities", "entities"), ("entity_links", "entity_links"), ("message_signals", "message_signals"),
                ):
                    receipt.count(kind, conn.execute(f"DELETE FROM {table} WHERE tenant=? AND user_id=?", args).rowcount)
                receipt.removed.pop("versions")
                receipt.removed.pop("trace_refs")
                # Webhook events about the user (escalations carry the user id in their payload).
                receipt.count("outbox_events", conn.execute(
                    "DELETE FROM outbox WHERE tenant=? AND json_extract(payload, '$.user') = ?", args
                ).rowcount)
                return receipt

            receipt = self._transaction(conn, body)
            self._keys.pop(user, None)  # crypto-shredding: the data key is gone from disk and memory
            self._reclaim(conn, vacuum=True)
            return receipt

        return await self._run(erase)

    async def append_audit(self, tenant: str, drafts: list[AuditDraft], now: datetime) -> list[AuditEntry]:
        def append(conn: sqlite3.Connection) -> list[AuditEntry]:
            def body() -> list[AuditEntry]:
                head = conn.execute("SELECT seq, hash FROM audit_heads WHERE tenant=?", (tenant,)).fetchone()
                seq, prev = (head[0], head[1]) if head else (0, GENESIS_HASH)
                entries = []
                for draft in drafts:
                    seq += 1
                    entry = chain_entry(draft, seq, prev, now)
                    conn.execute(
                        "INSERT INTO audit_log (tenant, seq, ts, user_id, action, ids, request_id, prev_hash, hash)"
                        " VALUES (?,?,?,?,?,?,?,?,?)",
                        (tenant, entry.seq, entry.ts, entry.user, entry.action, json.dumps(entry.ids),
                         entry.request_id, entry.prev_hash, entry.hash),
                    )
                    entries.append(entry)
                    prev = entry.hash
                if entries:
                    conn.execute(
                        "INSERT INTO audit_heads (tenant, seq, hash) VALUES (?,?,?)"
                        " ON CONFLICT (tenant) DO UPDATE SET seq=excluded.seq, hash=excluded.hash",
                        (tenant, seq, prev),
                    )
                return entries

            return self._transaction(conn, body)

        return await self._run(append)

    async def list_audit(self, tenant: str, user: str | None = None) -> list[AuditEntry]:
        def load(conn: sqlite3.Connection) -> list[AuditEntry]:
            if user is None:
                rows = conn.execute("SELECT * FROM audit_log WHERE tenant=? ORDER BY rowid", (tenant,)).fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM audit_log WHERE tenant=? AND user_id=? ORDER BY rowid", (tenant, user)
                ).fetchall()
            return [
                AuditEntry(seq=r["seq"], ts=r["ts"], tenant=r["tenant"], user=r["user_id"], action=r["action"],
                           ids=json.loads(r["ids"]), request_id=r["request_id"], prev_hash=r["prev_hash"], hash=r["hash"])
                for r in rows
            ]

        return await self._run(load)

    async def audit_head(self, tenant: str) -> tuple[int, str] | None:
        def head(conn: sqlite3.Connection) -> tuple[int, str] | None:
            row = conn.execute("SELECT seq, hash FROM audit_heads WHERE tenant=?", (tenant,)).fetchone()
            return (row[0], row[1]) if row else None

        return await self._run(head)

    async def expired_memories(self, tenant: str, before: datetime, limit: int) -> list[tuple[UserRef, str]]:
        def expired(conn: sqlite3.Connection) -> list[tuple[UserRef, str]]:
            rows = conn.execute(
                "SELECT user_id, id FROM memories WHERE tenant=? AND pinned=0 AND created_at < ? LIMIT ?",
                (tenant, before.timestamp(), limit),
            ).fetchall()
            return [(UserRef(tenant, r[0]), r[1]) for r in rows]

        return await self._run(expired)
