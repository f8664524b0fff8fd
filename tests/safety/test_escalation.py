"""Escalation webhooks: signed, durable, one per episode, across an outage and a restart."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.servers import ServerThread
from salience.store.base import open_store
from tests.conftest import STORE_BACKENDS

pytestmark = pytest.mark.parametrize("store_backend", STORE_BACKENDS, indirect=True)

SECRET = "whsec-test-0123456789abcdef"
FAST_RETRIES = {"webhooks": {"retry_base_seconds": 0.2, "retry_max_seconds": 0.5, "poll_seconds": 0.1}}


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class FakeWebhook:
    """The app's safety team: answers 503 while ``down``, records every attempt."""

    down: bool = False
    attempts: list[Delivery] = field(default_factory=list)
    accepted: list[Delivery] = field(default_factory=list)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            delivery = Delivery({k.lower(): v for k, v in request.headers.items()}, await request.body())
            self.attempts.append(delivery)
            if self.down:
                return Response(status_code=503)
            self.accepted.append(delivery)
            return Response(status_code=204)

        return Starlette(routes=[Route("/hooks/safety", receive, methods=["POST"])])


@pytest.fixture
def webhook():
    fake = FakeWebhook()
    with ServerThread(fake.app()) as server:
        yield fake, server.url + "/hooks/safety"


def verify(delivery: Delivery) -> dict[str, Any]:
    """What a receiver does: recompute the HMAC over the raw body, check the timestamp."""
    expected = "sha256=" + hmac.new(SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery.headers["x-salience-signature"], expected)
    event = delivery.event
    assert delivery.headers["x-salience-event-id"] == event["id"]
    assert int(delivery.headers["x-salience-timestamp"]) == event["timestamp"]
    assert abs(time.time() - event["timestamp"]) < 60
    return event


async def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def tenant_with(url: str, **safety: Any) -> dict[str, Any]:
    return {"safety": {"webhook_url": url, "webhook_secret": SECRET, **safety}}


async def say(proxy, text: str, user: str = "fern", session: str | None = None) -> None:
    headers = {"X-Salience-Session": session} if session else None
    async with proxy.client() as client:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": text}], user=user, extra_headers=headers,
        )


async def test_one_signed_event_per_episode_through_an_outage_and_a_restart(make_proxy, upstream, webhook, tmp_path):
    fake, url = webhook
    shared = {"data_dir": str(tmp_path / "shared-data"), **FAST_RETRIES}
    fake.down = True
    first = make_proxy(upstream, tenant=tenant_with(url), server=shared)
    await say(first, "I want to kill myself. I can't do this anymore.", session="night-1")
    await wait_until(lambda: len(fake.attempts) >= 2)  # it retried, with backoff, and failed
    first.stop()

    fake.down = False
    second = make_proxy(upstream, tenant=tenant_with(url), server=shared)
    await wait_until(lambda: len(fake.accepted) == 1)
    event = verify(fake.accepted[0])
    assert {d.event["id"] for d in fake.attempts} == {event["id"]}  # every attempt was the same event
    assert event["type"] == "safety.escalation"
    assert (event["tenant"], event["user"], event["session"]) == ("demo", "fern", "night-1")
    assert (event["category"], event["severity"]) == ("suicidal_ideation", "risk")
    assert event["message_id"].startswith("msg_")
    assert "message_text" not in event and "kill myself" not in fake.accepted[0].body.decode()

    # Same episode, new session, after the restart: remembered, not escalated again.
    await say(second, "I still want to die.", session="night-2")
    await say(second, "Everyone would be better off without me.", session="night-2")
    await asyncio.sleep(1.0)
    assert len(fake.accepted) == 1
    async with second.http() as http:
        [safety] = [m for m in (await http.get("/v1/users/fern/memories")).json()["data"] if m["kind"] == "safety"]
    assert safety["mention_count"] == 3


async def test_a_rise_to_imminent_within_the_episode_is_escalated_once_more(make_proxy, upstream, webhook):
    fake, url = webhook
    proxy = make_proxy(upstream, tenant=tenant_with(url), server=FAST_RETRIES)
    await say(proxy, "I keep thinking about suicide.")
    await wait_until(lambda: len(fake.accepted) == 1)
    await say(proxy, "I'm going to kill myself tonight, I have the pills.")
    await say(proxy, "I'm going to kill myself tonight.")
    await wait_until(lambda: len(fake.accepted) == 2)
    await asyncio.sleep(0.5)
    first, raised = (verify(d) for d in fake.accepted)
    assert len(fake.accepted) == 2
    assert raised["type"] == "safety.escalation.raised" and raised["severity"] == "imminent"
    assert raised["episode"] == first["episode"]


async def test_below_the_threshold_nothing_is_sent_and_text_only_when_opted_in(make_proxy, upstream, webhook):
    fake, url = webhook
    proxy = make_proxy(
        upstream, tenant=tenant_with(url, escalation_threshold="imminent", include_message_text=True),
        server=FAST_RETRIES,
    )
    await say(proxy, "I don't see the point anymore.", user="gus")
    await asyncio.sleep(0.5)
    assert fake.attempts == []
    await say(proxy, "I just took a whole bottle of pills", user="gus")
    await wait_until(lambda: len(fake.accepted) == 1)
    event = verify(fake.accepted[0])
    assert event["category"] == "medical_emergency" and event["severity"] == "imminent"
    assert event["message_text"] == "I just took a whole bottle of pills"


async def test_without_a_webhook_nothing_is_queued(make_proxy, upstream):
    proxy = make_proxy(upstream)
    await say(proxy, "I want to kill myself.", user="hal")
    # through a store of the test's own: the app's belongs to the server thread's event loop
    store = open_store(proxy.config.server.resolved_store_url)
    await store.open()
    try:
        assert await store.pending_outbox() == 0
    finally:
        await store.close()
