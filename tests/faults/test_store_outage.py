"""Redis stops mid-conversation: the companion keeps answering, and nothing said is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import memory_block, wait_for_memories
from tests.redis_server import RedisServer

BEFORE = "My sister Sarah was just diagnosed with breast cancer."
DURING = [
    "I lost my job at the bakery in October.",
    "My dog Biscuit is fourteen years old.",
]
DURING_STREAMED = "I have been learning the cello for a year."


@pytest.fixture
def own_redis(tmp_path: Path):
    """A redis-server of this test's own, with an append-only file: it is stopped and restarted."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


async def say(client, text: str, **kwargs):
    return await client.chat.completions.with_raw_response.create(
        model="fake-model", messages=[{"role": "user", "content": text}],
        extra_headers={"X-Salience-User": "maya", "X-Salience-Session": "s1"}, **kwargs,
    )


async def test_completions_survive_a_redis_outage_and_spooled_exchanges_are_remembered(make_proxy, upstream, own_redis):
    proxy = make_proxy(upstream, server={"store_url": own_redis.url})
    async with proxy.client() as client, proxy.http() as http:
        assert (await say(client, BEFORE)).headers["x-salience-memory"] == "on"
        await wait_for_memories(http, "maya")

        own_redis.stop()
        for text in DURING:
            raw = await say(client, text)
            assert raw.headers["x-salience-memory"] == "degraded"
            assert raw.parse().choices[0].message.content == "I am here for you."
            assert upstream.last_messages() == [{"role": "user", "content": text}]  # passed through as sent
        stream = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": DURING_STREAMED}], stream=True,
            extra_headers={"X-Salience-User": "maya"},
        )
        assert stream.response.headers["x-salience-memory"] == "degraded"
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "I am here for you."
        # the memory API has nothing to answer with: it says so in OpenAI's error format
        down = await http.get("/v1/users/maya/memories")
        assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable"

        own_redis.start()  # same port, same append-only file
        memories = await wait_for_memories(http, "maya", at_least=4, timeout=30)
        assert sorted(m["text"] for m in memories) == sorted([BEFORE, *DURING, DURING_STREAMED])

        raw = await say(client, "Do you remember my dog?")
        assert raw.headers["x-salience-memory"] == "on"
        assert "Biscuit" in memory_block(upstream.last_messages())
    spool = proxy.config.server.data_dir / "spool"
    assert not (spool / "exchanges.jsonl.replaying").exists()
    assert not (spool / "exchanges.jsonl").exists() or (spool / "exchanges.jsonl").stat().st_size == 0


async def test_a_proxy_started_while_redis_is_down_serves_and_catches_up(make_proxy, upstream, tmp_path):
    server = RedisServer(tmp_path / "late-redis")
    proxy = make_proxy(upstream, server={"store_url": server.url})
    try:
        async with proxy.client() as client, proxy.http() as http:
            raw = await say(client, DURING[0])
            assert raw.headers["x-salience-memory"] == "degraded"
            server.start()
            memories = await wait_for_memories(http, "maya", timeout=30)
        assert [m["text"] for m in memories] == [DURING[0]]
    finally:
        server.stop()


async def test_safety_screening_still_runs_while_the_store_is_down(make_proxy, upstream, own_redis):
    proxy = make_proxy(upstream, server={"store_url": own_redis.url})
    async with proxy.client() as client:
        own_redis.stop()
        raw = await say(client, "I want to kill myself tonight.")
    assert raw.headers["x-salience-memory"] == "degraded"
    assert raw.headers["x-salience-safety"].startswith("suicidal_ideation:")
    note = memory_block(upstream.last_messages())
    assert "988" in note  # the tenant's locale (en-US) crisis line, although no memory could be read
