"""The upstream is down: the client gets OpenAI's error format, and a retried message is
remembered once, not once per attempt."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import STORE_BACKENDS
from tests.helpers import wait_for_memories

pytestmark = pytest.mark.parametrize("store_backend", STORE_BACKENDS, indirect=True)

TEXT = "My grandmother turns ninety in December."


async def test_retries_after_an_upstream_outage_are_remembered_once(make_proxy, upstream):
    proxy = make_proxy(upstream)
    request = dict(model="fake-model", messages=[{"role": "user", "content": TEXT}],
                   extra_headers={"X-Salience-User": "olga", "X-Salience-Session": "s1"})
    async with proxy.client() as client, proxy.http() as http:
        upstream.mode, upstream.status = "error", 503
        for _ in range(2):
            with pytest.raises(openai.InternalServerError) as refused:
                await client.chat.completions.create(**request)
            assert refused.value.status_code == 503
            assert refused.value.body["message"] == "upstream says no"
        await asyncio.sleep(0.5)
        assert await wait_for_memories(http, "olga", timeout=0.5) == []  # a refused exchange is not queued

        upstream.mode = "ok"
        for _ in range(3):  # the app retries, and retries again after success
            await client.chat.completions.create(**request)
        memories = await wait_for_memories(http, "olga")
        await asyncio.sleep(1.0)  # time for any duplicate to show up
        memories = await wait_for_memories(http, "olga")
    assert [(m["text"], m["mention_count"]) for m in memories] == [(TEXT, 1)]
