"""SIGKILL in the middle of extraction: after a restart every job completes exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from salience.exchange import Turn, exchange_messages, extraction_job
from salience.model import UserRef, utcnow
from salience.store.base import open_store
from tests.conftest import write_config
from tests.processes import ProxyProcess, offline_env
from tests.redis_server import RedisServer

USERS = [f"user-{i:02d}" for i in range(20)]
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Ema", "Farid", "Gus", "Hiro", "Ines", "Jon",
         "Kemi", "Lars", "Mira", "Nils", "Oona", "Pia", "Quinn", "Rosa", "Sami", "Tara"]
CITIES = ["Lisbon", "Oslo", "Lagos", "Quito", "Hanoi", "Perth", "Turin", "Dakar", "Riga", "Cusco",
          "Accra", "Bergen", "Lyon", "Busan", "Cork", "Graz", "Pune", "Split", "Tartu", "Oaxaca"]
# Ten topics far apart, so no two of a user's sentences are merged as "the same memory".
TOPICS = [
    "I work as a nurse at the children's hospital in {city}.",
    "My brother {name} is getting married in June.",
    "I am terrified of deep water since I nearly drowned as a kid.",
    "My favourite food is my grandmother's lentil soup.",
    "I adopted a grey cat called Pebble in 2024.",
    "I want to run the {city} marathon in the spring.",
    "My father was diagnosed with diabetes in 2021.",
    "I have been learning to play the violin on weekends.",
    "We moved into a small flat near the river in May.",
    "My best friend {name} stopped talking to me after an argument.",
]


def expected_memories(index: int) -> list[str]:
    return [topic.format(name=NAMES[index], city=CITIES[index]) for topic in TOPICS]


async def queue_200_messages(store_url: str) -> None:
    """200 user messages waiting to be extracted, one job each, as replicas would queue them."""
    store = open_store(store_url)
    await store.open()
    try:
        for index, user_id in enumerate(USERS):
            user = UserRef("demo", user_id)
            for position, text in enumerate(expected_memories(index)):
                session = await store.resolve_session(user, "import", utcnow(), timedelta(minutes=30))
                messages = exchange_messages(user, session, utcnow(), [Turn(position, "user", text)])
                assert await store.enqueue_extraction(extraction_job(user, session, messages), utcnow())
    finally:
        await store.close()


async def pending(store_url: str) -> int:
    store = open_store(store_url)
    await store.open()
    try:
        return await store.pending_extractions()
    finally:
        await store.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own: whole proxy processes share nothing with other tests."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def test_sigkill_mid_extraction_then_restart_completes_every_job_exactly_once(tmp_path, private_redis):
    config = write_config(
        tmp_path / "config",
        {"demo": {"api_keys": ["os.environ/CRASH_TEST_KEY"], "upstream": {"transport": "echo"}}},
        {"extraction": {"lease_seconds": 2}},  # a dead worker's jobs are taken over after 2 s
    )
    env = offline_env(CRASH_TEST_KEY="sk-crash-test-key", SALIENCE_STORE_URL=private_redis.url)
    asyncio.run(queue_200_messages(private_redis.url))
    assert asyncio.run(pending(private_redis.url)) == 200

    first = ProxyProcess(config, env, tmp_path / "proxy.log").start()
    try:
        deadline = time.monotonic() + 120
        while (left := asyncio.run(pending(private_redis.url))) > 170:  # kill once 30+ jobs are done
            assert time.monotonic() < deadline, "extraction did not start"
            time.sleep(0.02)
    finally:
        first.kill()
    left = asyncio.run(pending(private_redis.url))
    assert 0 < left < 200, f"the kill must land mid-extraction ({left} jobs left)"
    leased_to_the_dead = private_redis.client().xpending("salience:{queue}:stream", "workers")["pending"]
    print(f"killed with {left} jobs pending, {leased_to_the_dead} of them leased to the killed worker")

    second = ProxyProcess(config, env, tmp_path / "proxy.log").start()
    try:
        deadline = time.monotonic() + 120
        while asyncio.run(pending(private_redis.url)):
            assert time.monotonic() < deadline, "the restarted proxy did not finish the queue"
            time.sleep(0.2)
        assert private_redis.client().xpending("salience:{queue}:stream", "workers")["pending"] == 0  # all acknowledged
        with httpx.Client(base_url=second.url, headers={"authorization": "Bearer sk-crash-test-key"}) as http:
            for index, user_id in enumerate(USERS):
                reply = http.get(f"/v1/users/{user_id}/memories", params={"limit": 100})
                assert reply.status_code == 200, (user_id, reply.status_code, reply.text,
                                                  (tmp_path / "proxy.log").read_text()[-2000:])
                memories = reply.json()["data"]
                assert sorted(m["text"] for m in memories) == sorted(expected_memories(index)), user_id
                assert all(m["mention_count"] == 1 and len(m["sources"]) == 1 for m in memories), user_id
    finally:
        second.stop()
    log = (tmp_path / "proxy.log").read_text()
    assert "nurse" not in log and "sk-crash-test-key" not in log  # no memory content, no secrets in logs
