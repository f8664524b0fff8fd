"""The spool: exchanges kept on local disk while the store is unreachable, queued later.

When the store is down a completion is still served (pass-through), and what the user said
must not be lost. It is appended, one JSON line per exchange and fsynced, to
``<data_dir>/spool/exchanges.jsonl``. A background task moves that file aside and queues its
exchanges once the store answers again; a replay cut short is resumed from the moved file.
A spooled exchange's job id derives from its spool record id, so replaying it twice queues it once.

For a tenant with a master key the user, session and turns of a record are sealed (AES-GCM,
``compliance/crypto.py``) under the tenant's spool key: what a user said is never on disk in
clear, not even while the store is down. A record that no longer opens (the master key was
changed meanwhile) is dropped with a warning.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from salience.background import cancel_task
from salience.compliance.crypto import DecryptionError, TenantKeyring
from salience.exchange import Turn, exchange_messages, extraction_job
from salience.model import UserRef, stable_id, utcnow
from salience.settings import TenantSettings
from salience.store.base import Store, StoreUnavailable

log = logging.getLogger("salience.spool")


class ExchangeSpool:
    """An append-only file of exchanges; safe for several processes sharing one data dir."""

    def __init__(self, directory: Path, keyring: TenantKeyring | None = None) -> None:
        self.directory = directory
        self.keyring = keyring or TenantKeyring({})
        self.path = directory / "exchanges.jsonl"
        self.replaying = directory / "exchanges.jsonl.replaying"
        self._lock_path = directory / "spool.lock"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, user: UserRef, session: str | None, at: datetime, turns: list[Turn]) -> None:
        record: dict[str, Any] = {"id": uuid.uuid4().hex, "tenant": user.tenant, "at": at.timestamp()}
        private = {"user": user.user, "session": session, "turns": [[t.index, t.role, t.content, t.name] for t in turns]}
        key = self.keyring.spool_key(user.tenant)
        if key is None:
            record.update(private)
        else:
            record["sealed"] = self.keyring.seal(key, json.dumps(private, ensure_ascii=False), spool_context(record))
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._locked(), open(self.path, "a", encoding="utf-8") as spool:
            spool.write(line)
            spool.flush()
            os.fsync(spool.fileno())

    def has_records(self) -> bool:
        return self.replaying.exists() or (self.path.exists() and self.path.stat().st_size > 0)

    def take(self) -> list[dict[str, Any]]:
        """The records to replay: a replay cut short first, else everything spooled so far."""
        with self._locked():
            if not self.replaying.exists() and self.path.exists():
                self.path.rename(self.replaying)  # appends from now on go to a fresh file
        if not self.replaying.exists():
            return []
        records = []
        for line in self.replaying.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write: its exchange never got a reply out
            opened = self._opened(record)
            if opened is not None:
                records.append(opened)
        return records

    def _opened(self, record: dict[str, Any]) -> dict[str, Any] | None:
        if "sealed" not in record:
            return record
        key = self.keyring.spool_key(record["tenant"])
        try:
            if key is None:
                raise DecryptionError("the tenant has no master key any more")
            private = json.loads(self.keyring.open(key, record.pop("sealed"), spool_context(record)))
        except DecryptionError:
            log.warning("dropping a spooled exchange of tenant %s that no longer opens", record["tenant"])
            return None
        return {**record, **private}

    def replayed(self) -> None:
        self.replaying.unlink(missing_ok=True)


def spool_context(record: dict[str, Any]) -> str:
    """What a sealed record is bound to: moved to another tenant or record, it does not open."""
    return f"spool:{record['tenant']}:{record['id']}"


class SpoolReplayer:
    """Queues spooled exchanges once the store is reachable again."""

    def __init__(
        self, spool: ExchangeSpool, store: Store, tenants: dict[str, TenantSettings], interval: float = 1.0
    ) -> None:
        self.spool = spool
        self.store = store
        self.tenants = tenants
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def replay_once(self) -> int:
        """Queue every spooled exchange; returns how many were newly queued. Raises
        ``StoreUnavailable`` when the store is still down (the file stays for the next try)."""
        if not self.spool.has_records():
            return 0
        queued = 0
        for record in await asyncio.to_thread(self.spool.take):
            tenant = self.tenants.get(record["tenant"])
            if tenant is None:
                log.warning("dropping a spooled exchange of a tenant no longer configured")
                continue
            user = UserRef(record["tenant"], record["user"])
            at = datetime.fromtimestamp(record["at"], timezone.utc)
            gap = timedelta(minutes=tenant.memory.session_gap_minutes)
            session = await self.store.resolve_session(user, record["session"], at, gap)
            turns = [Turn(index, role, content, name) for index, role, content, name in record["turns"]]
            messages = exchange_messages(user, session, at, turns)
            job = extraction_job(user, session, messages, job_id=stable_id("job", "spool", record["id"]))
            queued += await self.store.enqueue_extraction(job, utcnow())
        await asyncio.to_thread(self.spool.replayed)
        if queued:
            log.info("replayed %d spooled exchanges into the extraction queue", queued)
        return queued

    async def _loop(self, on_queued: Any) -> None:
        while True:
            try:
                if await self.replay_once():
                    on_queued()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable:
                pass  # still down: try again at the next tick
            except Exception as exc:
                log.error("spool replay failed: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)

    def start(self, on_queued: Any) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(on_queued), name="salience-spool-replay")

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None
