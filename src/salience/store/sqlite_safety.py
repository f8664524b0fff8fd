"""The SQLite store's safety records: a user's record, pinned safety memories and escalation events
saved together.

Part of ``SQLiteStore`` (sqlite.py): the methods here run on its store thread through its plumbing
(``_run``, ``_transaction``, the sealing helpers).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from salience.model import (
    MemoryItem,
    OutboxEvent,
    SafetyRecord,
    UserRef,
)
from salience.store.sqlite_schema import (
    MEMORY_COLUMNS,
    _bump_version,
    _memory_row,
)


class SQLiteSafety:
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
