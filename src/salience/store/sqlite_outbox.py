"""The SQLite store's webhook outbox: durable escalation events, claimed with a lease.

Part of ``SQLiteStore`` (sqlite.py): the methods here run on its store thread through its plumbing
(``_run``, ``_transaction``, the sealing helpers).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta

from salience.model import (
    OutboxEvent,
)
from salience.store.sqlite_schema import (
    _dt,
)


class SQLiteOutbox:
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
