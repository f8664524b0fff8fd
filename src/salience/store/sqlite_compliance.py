"""The SQLite store's compliance half: erasure, export and the hash-chained audit log.

Part of ``SQLiteStore`` (sqlite.py): the methods here run on its store thread through its plumbing
(``_run``, ``_transaction``, the sealing helpers).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from salience.model import (
    GENESIS_HASH,
    AuditDraft,
    AuditEntry,
    ErasureReceipt,
    Message,
    UserRef,
    chain_entry,
)
from salience.store.sqlite_schema import (
    _bump_version,
    _dt,
)


class SQLiteCompliance:
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
            self._read_keys.pop(user, None)
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
