"""The SQLite store's extraction queue: jobs claimed with a lease, retried with backoff.

Part of ``SQLiteStore`` (sqlite.py): the methods here run on its store thread through its plumbing
(``_run``, ``_transaction``, the sealing helpers).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta

from salience.model import (
    ExtractionJob,
    MemoryItem,
    UserRef,
)
from salience.store.sqlite_schema import (
    MEMORY_COLUMNS,
    _bump_version,
    _memory_row,
    _message_from_json,
    _message_to_json,
    _ts,
)


class SQLiteQueue:
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
