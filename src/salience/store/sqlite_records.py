"""The SQLite store's records kept for a while only: debug traces, and the pruning of those
and of finished extraction jobs and webhook events once their time is up (``FINISHED_KEPT``,
``GIVEN_UP_KEPT`` in ``store.base``: what Redis does with key expiry, done here by the
retention sweep). A trace past its time is not returned even before it is pruned.

Part of ``SQLiteStore`` (sqlite.py): the methods here run on its store thread through its
plumbing (``_run``, ``_transaction``, the sealing helpers).
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime
from typing import Any

from salience.model import UserRef
from salience.store.base import FINISHED_KEPT, GIVEN_UP_KEPT


class SQLiteRecords:
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
                "SELECT payload, user_id FROM traces WHERE tenant=? AND id=? AND created_at >= ?",
                (tenant, trace_id, time.time() - FINISHED_KEPT.total_seconds()),
            ).fetchone()
            if row is None:
                return None
            text = row[0] if row[1] is None else self._unseal(conn, UserRef(tenant, row[1]), row[0], "trace")
            return json.loads(text)  # type: ignore[arg-type]

        return await self._run(get)

    async def prune_finished(self, now: datetime, limit: int) -> int:
        finished_before = (now - FINISHED_KEPT).timestamp()
        given_up_before = (now - GIVEN_UP_KEPT).timestamp()

        def prune(conn: sqlite3.Connection) -> int:
            def body() -> int:
                traces = [tuple(r) for r in conn.execute(
                    "SELECT tenant, id FROM traces WHERE created_at < ? LIMIT ?", (finished_before, limit)
                ).fetchall()]
                conn.executemany("DELETE FROM trace_refs WHERE tenant=? AND trace_id=?", traces)
                conn.executemany("DELETE FROM traces WHERE tenant=? AND id=?", traces)
                jobs = conn.execute(
                    "DELETE FROM extraction_jobs WHERE id IN (SELECT id FROM extraction_jobs WHERE"
                    " (status='done' AND created_at < ?) OR (status='failed' AND created_at < ?) LIMIT ?)",
                    (finished_before, given_up_before, limit),
                ).rowcount
                events = conn.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE"
                    " (status='delivered' AND delivered_at < ?) OR (status='failed' AND created_at < ?) LIMIT ?)",
                    (finished_before, given_up_before, limit),
                ).rowcount
                return len(traces) + jobs + events

            return self._transaction(conn, body)

        return await self._run(prune)
