"""Escalation: one signed webhook event per episode, delivered from a durable outbox.

Deciding (``escalation_for``) happens when a message is screened and is saved atomically
with the user's safety record, so a restart can neither lose nor repeat an event. Sending
(``EscalationSender``) happens in the background, never on the reply path: claim due
events, POST them signed, retry with exponential backoff until delivered or given up.

A receiver verifies ``X-Salience-Signature`` = ``sha256=`` + HMAC-SHA256(secret, raw body);
the body carries the event id and the same timestamp as ``X-Salience-Timestamp``, so
both are covered by the signature (reject stale timestamps; deduplicate on the id).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import httpx

from salience.model import OutboxEvent, SafetyRecord, UserRef, stable_id, utcnow
from salience.safety.detect import SEVERITY_RANK, Flag, at_least
from salience.background import Poller
from salience.settings import TenantSettings, WebhookDeliverySettings
from salience.store.base import Store

log = logging.getLogger("salience.safety.escalate")

EVENT_KIND = "safety.escalation"
LEASE = timedelta(seconds=60)
SIGNATURE_HEADER = "X-Salience-Signature"
TIMESTAMP_HEADER = "X-Salience-Timestamp"
EVENT_ID_HEADER = "X-Salience-Event-Id"


def escalation_for(
    record: SafetyRecord,
    tenant: TenantSettings,
    user: UserRef,
    session_id: str,
    message_id: str,
    message_text: str,
    flag: Flag,
    now: datetime,
) -> tuple[SafetyRecord, OutboxEvent | None]:
    """The record with its episode moved on, and the event to send (None: not this time).

    A flag at or above the threshold opens an episode and sends one event; later flags
    keep the episode open without another event, unless the severity rises above what
    was escalated (risk -> imminent), which the safety team must hear about.
    """
    settings = tenant.safety
    if not settings.escalation_enabled or not at_least(flag.severity, settings.escalation_threshold):
        return record, None
    quiet = timedelta(hours=settings.episode_quiet_hours)
    episode_open = (
        record.episode_id is not None and record.episode_last_at is not None and now - record.episode_last_at <= quiet
    )
    if episode_open:
        raised = SEVERITY_RANK[flag.severity] > SEVERITY_RANK.get(record.escalated_severity or "", -1)
        record = replace(
            record, episode_last_at=now, escalated_severity=flag.severity if raised else record.escalated_severity
        )
        if not raised:
            return record, None
        event_type = "safety.escalation.raised"
    else:
        record = replace(
            record,
            episode_id=stable_id("episode", user.tenant, user.user, message_id),
            episode_started_at=now,
            episode_last_at=now,
            escalated_severity=flag.severity,
        )
        event_type = EVENT_KIND
    assert record.episode_id is not None
    event_id = stable_id("evt", user.tenant, user.user, record.episode_id, flag.severity)
    payload: dict[str, Any] = {
        "id": event_id,
        "type": event_type,
        "tenant": user.tenant,
        "user": user.user,
        "session": session_id,
        "message_id": message_id,
        "category": flag.category,
        "severity": flag.severity,
        "episode": record.episode_id,
        "episode_started_at": int(record.episode_started_at.timestamp()) if record.episode_started_at else None,
        "detected_at": int(now.timestamp()),
    }
    if settings.include_message_text:
        payload["message_text"] = message_text
    return record, OutboxEvent(id=event_id, tenant=user.tenant, kind=EVENT_KIND, payload=payload, created_at=now)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_request(event: OutboxEvent, secret: str, now: datetime) -> tuple[bytes, dict[str, str]]:
    """The exact bytes to POST and their headers; the timestamp is inside the signed body too."""
    timestamp = str(int(now.timestamp()))
    body = json.dumps({**event.payload, "timestamp": int(timestamp)}, separators=(",", ":"), sort_keys=True).encode()
    return body, {
        "Content-Type": "application/json",
        "User-Agent": "salience-webhooks",
        EVENT_ID_HEADER: event.id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, body),
    }


def backoff(attempts: int, settings: WebhookDeliverySettings) -> timedelta:
    """base, 2 x base, 4 x base ... capped: a receiver that is down is not hammered."""
    return timedelta(seconds=min(settings.retry_base_seconds * 2 ** max(attempts - 1, 0), settings.retry_max_seconds))


class EscalationSender:
    """Drains the outbox in the background; ``notify`` after a reply wakes it at once."""

    def __init__(
        self, store: Store, tenants: dict[str, TenantSettings], settings: WebhookDeliverySettings, batch: int = 16
    ) -> None:
        self.store = store
        self.tenants = tenants
        self.settings = settings
        self.batch = batch
        self._poller = Poller("salience-escalation-sender", self.run_once, settings.poll_seconds)
        self._client: httpx.AsyncClient | None = None

    async def deliver(self, event: OutboxEvent) -> None:
        tenant = self.tenants.get(event.tenant)
        safety = tenant.safety if tenant else None
        if safety is None or not safety.webhook_url or not safety.webhook_secret:
            await self.store.retry_outbox(event.id, "the tenant has no webhook configured any more", None)
            log.error("escalation event %s dropped: tenant %s has no webhook", event.id, event.tenant)
            return
        body, headers = signed_request(event, safety.webhook_secret, utcnow())
        try:
            assert self._client is not None
            response = await self._client.post(safety.webhook_url, content=body, headers=headers)
            error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        if error is None:
            await self.store.ack_outbox(event.id, utcnow())
            log.info("escalation event %s delivered (attempt %d)", event.id, event.attempts)
            return
        give_up = event.attempts >= self.settings.max_attempts
        retry_at = None if give_up else utcnow() + backoff(event.attempts, self.settings)
        log.warning(
            "escalation event %s not delivered (attempt %d, %s): %s",
            event.id, event.attempts, "giving up" if give_up else "will retry", error,
        )
        await self.store.retry_outbox(event.id, error, retry_at)

    async def run_once(self) -> int:
        """Deliver the events that are due now; returns how many were claimed."""
        events = await self.store.claim_outbox(self.batch, utcnow(), LEASE)
        await asyncio.gather(*(self.deliver(event) for event in events))
        return len(events)

    def notify(self) -> None:
        self._poller.notify()

    def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.settings.timeout_seconds, follow_redirects=False)
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._client = None
