"""The SQLite store's person model: entities, their links to memories, and message signals.

Part of ``SQLiteStore`` (sqlite.py): the methods here run through its plumbing (``_run`` on the
store thread, ``_read`` on a reader connection, ``_transaction``, the sealing helpers).
"""

from __future__ import annotations

import json
import sqlite3

from salience.model import (
    Entity,
    MessageSignal,
    SignalChanges,
    UserRef,
)
from salience.store.sqlite_schema import (
    _bump_version,
    _written_since,
)


class SQLitePersonModel:
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

        return await self._read(load)

    async def save_message_signals(self, user: UserRef, signals: list[MessageSignal]) -> None:
        def save(conn: sqlite3.Connection) -> None:
            def body() -> None:
                if not signals:
                    return
                version = _bump_version(conn, user)
                conn.executemany(
                    "INSERT OR REPLACE INTO message_signals (tenant, user_id, message_id, created_at, doc, version)"
                    " VALUES (?,?,?,?,?,?)",
                    [
                        (user.tenant, user.user, s.message_id, s.created_at.timestamp(),
                         self._seal(conn, user, json.dumps(s.to_json()), "signal"), version)
                        for s in signals
                    ],
                )

            self._transaction(conn, body)

        await self._run(save)

    async def load_message_signals(self, user: UserRef) -> list[MessageSignal]:
        def load(conn: sqlite3.Connection) -> list[MessageSignal]:
            rows = conn.execute(
                "SELECT doc FROM message_signals WHERE tenant=? AND user_id=? ORDER BY created_at, rowid",
                (user.tenant, user.user),
            ).fetchall()
            return [self._signal_of(conn, user, row[0]) for row in rows]

        return await self._read(load)

    async def message_signal_changes(self, user: UserRef, since: int, limit: int) -> SignalChanges:
        def changes(conn: sqlite3.Connection) -> SignalChanges:
            version, count, rows = _written_since(conn, user, "message_signals", "doc", since, limit)
            changed = None if rows is None else [self._signal_of(conn, user, r[0]) for r in rows]
            return SignalChanges(version, count, changed)

        return await self._read(changes)

    def _signal_of(self, conn: sqlite3.Connection, user: UserRef, doc: str) -> MessageSignal:
        return MessageSignal.from_json(json.loads(self._unseal(conn, user, doc, "signal") or "{}"))
