"""The spool keeps exchanges on disk while the store is down; replaying is resumable and queues once."""

from __future__ import annotations

import json

from salience.compliance.crypto import TenantKeyring
from salience.exchange import Turn
from salience.model import UserRef, utcnow
from salience.settings import TenantSettings
from salience.spool import ExchangeSpool, SpoolReplayer
from salience.store.base import open_store

USER = UserRef("demo", "lee")


def spool_two(spool: ExchangeSpool) -> None:
    for index, text in enumerate(["My cat Miso is twelve.", "I start a new job on Monday."]):
        spool.append(USER, None, utcnow(), [Turn(index, "user", text)])


async def test_a_replay_cut_short_resumes_and_queues_each_exchange_once(tmp_path):
    spool = ExchangeSpool(tmp_path / "spool")
    spool_two(spool)
    with open(spool.path, "a") as torn:
        torn.write('{"id": "torn-by-a-cra')  # a crash mid-write leaves half a line
    first_take = spool.take()  # a replayer takes the file... and dies before finishing
    assert len(first_take) == 2
    spool.append(USER, "s2", utcnow(), [Turn(0, "user", "My sister lives in Leeds.")])  # still spooling meanwhile

    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    await store.open()
    try:
        replayer = SpoolReplayer(spool, store, {"demo": TenantSettings(id="demo")})
        assert await replayer.replay_once() == 2  # the cut-short file first
        assert await replayer.replay_once() == 1  # then what was spooled since
        assert await replayer.replay_once() == 0 and not spool.has_records()
        assert await store.pending_extractions(USER) == 3

        # the same records replayed again (a replayer that died after queueing) queue nothing
        spool.path.write_text("".join(json.dumps(record) + "\n" for record in first_take))
        assert await replayer.replay_once() == 0
        assert await store.pending_extractions(USER) == 3
    finally:
        await store.close()


async def test_a_tenant_with_a_master_key_never_has_a_spooled_word_on_disk_in_clear(tmp_path):
    keyring = TenantKeyring({"demo": "a-master-key-of-at-least-thirty-two-chars"})
    spool = ExchangeSpool(tmp_path / "spool", keyring)
    spool_two(spool)
    on_disk = spool.path.read_bytes()
    assert b"Miso" not in on_disk and b"Monday" not in on_disk and b"lee" not in on_disk

    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    await store.open()
    try:
        assert await SpoolReplayer(spool, store, {"demo": TenantSettings(id="demo")}).replay_once() == 2
        assert await store.pending_extractions(USER) == 2
    finally:
        await store.close()

    # a master key changed while exchanges were spooled: they cannot be read, and are dropped
    spool_two(spool)
    rotated = ExchangeSpool(tmp_path / "spool", TenantKeyring({"demo": "another-master-key-of-thirty-two-chars"}))
    assert rotated.take() == []
