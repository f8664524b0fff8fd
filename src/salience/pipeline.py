"""The request path of a chat completion, top to bottom in one place:

    identify -> screen -> recall -> inject (``prepare``) -> upstream -> respond
    -> enqueue extraction (and, when the message was flagged, wake the escalation sender)

Everything that makes the reply slower lives here where it can be seen; everything that
can wait (extraction, webhook delivery) happens after the last byte has left. When the
store is unreachable the reply is still served, without memory but still screened for
safety, and the exchange is spooled.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from salience.errors import SalienceError
from salience.exchange import Turn, exchange_messages, exchange_turns, extraction_job
from salience.memory.inject import inject_context, render_context
from salience.memory.recall import Recall
from salience.model import UserRef, content_text, new_id, utcnow
from salience.safety.screen import Screening
from salience.services import Services
from salience.settings import TenantSettings
from salience.store.base import StoreUnavailable

log = logging.getLogger("salience.pipeline")

USER_HEADER = "x-salience-user"
SESSION_HEADER = "x-salience-session"
MAX_STREAM_CAPTURE = 1_000_000  # bytes of a streamed reply kept for extraction
MAX_USER_ID = 256


@dataclass
class Identity:
    user: UserRef
    session_id: str | None  # None only when the store was unreachable and no session was asked for
    now: datetime
    request_id: str = field(default_factory=lambda: new_id("req"))  # names this request in the audit log


@dataclass
class Prepared:
    """What goes upstream, the headers the reply gets, and what runs after its last byte."""

    body: dict[str, Any]
    headers: dict[str, str]
    after: Callable[[str], Awaitable[None]]


async def chat_completion(request: Request, tenant: TenantSettings, body: dict[str, Any]) -> Response:
    services: Services = request.app.state.services
    # identify -> screen -> recall -> inject, counted as a reply being prepared: the extraction
    # worker holds back meanwhile (reply_gauge.py)
    with services.replies.preparing():
        prepared = await prepare(request, services, tenant, body)
    # upstream -> respond -> (after the last byte) enqueue extraction, wake the escalation sender
    return await respond(services.upstreams[tenant.id], prepared.body, bool(body.get("stream")), prepared.headers,
                         prepared.after)


async def prepare(request: Request, services: Services, tenant: TenantSettings, body: dict[str, Any]) -> Prepared:
    # identify
    user = user_of(request, tenant, body)
    if user is None:
        return await unremembered(services, tenant, body, "off")
    requested_session = request.headers.get(SESSION_HEADER) or None

    # Screening and recall both read the embedding of the latest user message: it is
    # computed (off the event loop) while the store answers and the lexical scores are made.
    # Recall needs the user, not the session: it starts now, while the session is resolved.
    query = content_text(last_message_of(body["messages"], "user").get("content"))
    services.embedder.start(query)
    recalling = asyncio.ensure_future(
        services.recaller.recall(user, query, tenant.memory, model=body.get("model") or tenant.upstream.model)
    )
    try:
        try:
            identity = await identify(services, tenant, user, requested_session)
        except BaseException:
            recalling.cancel()  # and its outcome read, if it ended first (the store is down, say)
            recalling.add_done_callback(lambda task: task.cancelled() or task.exception())
            raise

        # screen every new user message before anything goes upstream (a disclosure is
        # pinned), while recall goes on: neither needs the other's result
        assert identity.session_id is not None
        new_messages = exchange_messages(user, identity.session_id, identity.now, exchange_turns(body["messages"], ""))
        screening, recall = await asyncio.gather(
            services.safety.screen(tenant, user, identity.session_id, new_messages, identity.now), recalling
        )

        # inject: the safety note (pinned, outside the budget) first, then the recalled memories
        safety_note = services.safety.note(tenant, recall.pinned, screening)
        context = (
            render_context([m.item for m in recall.memories], safety_note, recall.arc_note) if safety_note else recall.context
        )
        upstream_body = {**body, "messages": inject_context(body["messages"], context)}
        headers = {
            "X-Salience-Memory": "on", "X-Salience-Session": identity.session_id,
            "X-Salience-Region": tenant.region, "X-Salience-Request-Id": identity.request_id,
        }
        if tenant.debug_headers:
            headers.update(await debug_headers(services, tenant, identity, recall, screening, upstream_body, body["messages"]))
    except StoreUnavailable:
        # Memory is out of reach, the companion is not: answer without it (still screened),
        # and keep the exchange on local disk so it is remembered once the store is back.
        log.warning("store unavailable: tenant %s served in pass-through", tenant.id)
        degraded = Identity(user, requested_session, utcnow())

        async def spool_later(reply_text: str) -> None:
            await spool_exchange(services, degraded, body["messages"], reply_text)

        return await unremembered(services, tenant, body, "degraded", spool_later)

    # after the last byte: the audit log, extraction, the escalation sender
    async def after_reply(reply_text: str) -> None:
        if recall.ids:  # the audit log: which memories this request injected (ids only)
            await services.auditor.record_quietly(tenant.id, user.user, "recall.inject", recall.ids, identity.request_id)
        await enqueue_extraction(services, identity, body["messages"], reply_text)
        if screening.flags:  # only a flagged message queues an event; the sender's poll finds retries
            services.escalations.notify()

    return Prepared(upstream_body, headers, after_reply)


async def respond(
    upstream: Any,
    body: dict[str, Any],
    streaming: bool,
    headers: dict[str, str],
    after: Callable[[str], Awaitable[None]],
) -> Response:
    """Send ``body`` upstream and the reply back; ``after`` gets the reply text once the last
    byte has left. An upstream refusal raises before any byte is sent, and ``after`` never runs."""
    if not streaming:
        reply = await upstream.complete(body)
        return Response(
            reply.body,
            status_code=reply.status,
            headers={**reply.headers, **headers},
            background=BackgroundTask(after, reply_text_of(reply.body)),
        )

    opened = await upstream.stream(body)
    captured = bytearray()

    async def relay():
        async for chunk in opened.chunks:
            if len(captured) < MAX_STREAM_CAPTURE:
                captured.extend(chunk)
            yield chunk

    async def after_stream() -> None:
        await after(streamed_text_of(bytes(captured)))

    return StreamingResponse(
        relay(),
        headers={**opened.headers, **headers},
        media_type="text/event-stream",
        background=BackgroundTask(after_stream),
    )


def user_of(request: Request, tenant: TenantSettings, body: dict[str, Any]) -> UserRef | None:
    """The end user (header wins over the body's ``user``); None: no user, no memory."""
    user_id = (request.headers.get(USER_HEADER) or "").strip() or (body.get("user") or "").strip()
    if not user_id:
        return None
    if len(user_id) > MAX_USER_ID:
        raise SalienceError(400, f"the user id must be at most {MAX_USER_ID} characters", param="user", code="invalid_value")
    return UserRef(tenant.id, user_id)


async def identify(services: Services, tenant: TenantSettings, user: UserRef, requested_session: str | None) -> Identity:
    """The user and their session, resolved by the store."""
    now = utcnow()
    session_id = await services.store.resolve_session(
        user, requested_session, now, timedelta(minutes=tenant.memory.session_gap_minutes)
    )
    return Identity(user, session_id, now)


async def unremembered(
    services: Services,
    tenant: TenantSettings,
    body: dict[str, Any],
    memory_state: str,
    after: Callable[[str], Awaitable[None]] | None = None,
) -> Prepared:
    """No memory read (no user, or the store is down), but a crisis still gets guidance and
    resources: the latest user message is screened without storing anything."""
    headers = {"X-Salience-Memory": memory_state}
    text = content_text(last_message_of(body["messages"], "user").get("content"))
    services.safety.start(text)  # its embedding on its thread while the rules read the text
    screening = Screening(await services.safety.classify(tenant, text)) if text else Screening()
    if screening.flags:
        note = services.safety.note(tenant, [], screening)
        body = {**body, "messages": inject_context(body["messages"], render_context([], note))}
    if tenant.debug_headers:
        headers["X-Salience-Safety"] = screening.header
    return Prepared(body, headers, after or _nothing_after)


async def _nothing_after(reply_text: str) -> None:
    return None


async def debug_headers(
    services: Services,
    tenant: TenantSettings,
    identity: Identity,
    recall: Recall,
    screening: Screening,
    upstream_body: dict[str, Any],
    request_messages: list[dict[str, Any]],
) -> dict[str, str]:
    """Headers that reveal what memory did, and a stored trace of what went upstream."""
    trace_id = new_id("trace")
    # What the trace holds, for erasure: the memories injected (pinned ones too) and every user
    # message of the request, by the ids they are stored under.
    assert identity.session_id is not None
    history = [Turn(i, "user", content_text(m.get("content"))) for i, m in enumerate(request_messages)
               if m.get("role") == "user"]
    refs = [*recall.ids, *(m.id for m in recall.pinned),
            *(m.id for m in exchange_messages(identity.user, identity.session_id, identity.now, history))]
    await services.store.save_trace(
        tenant.id,
        trace_id,
        {
            "id": trace_id,
            "object": "salience.trace",
            "created_at": int(identity.now.timestamp()),
            "user": identity.user.user,
            "session": identity.session_id,
            "memories": recall.ids,
            "context_tokens": recall.tokens,
            "confidence": recall.confidence,
            "safety": [{"category": f.category, "severity": f.severity} for f in screening.flags],
            "messages": upstream_body["messages"],
        },
        identity.now,
        refs,
    )
    return {
        "X-Salience-Memories": ",".join(recall.ids),
        "X-Salience-Context-Tokens": str(recall.tokens),
        "X-Salience-Confidence": f"{recall.confidence:.3f}",
        "X-Salience-Trace": trace_id,
        "X-Salience-Safety": screening.header,
    }


async def enqueue_extraction(
    services: Services, identity: Identity, request_messages: list[dict[str, Any]], reply_text: str
) -> None:
    """Queue the exchange (the latest user turn and the reply) for extraction."""
    turns = exchange_turns(request_messages, reply_text)
    if not turns:
        return
    assert identity.session_id is not None
    try:
        messages = exchange_messages(identity.user, identity.session_id, identity.now, turns)
        if await services.store.enqueue_extraction(extraction_job(identity.user, identity.session_id, messages), utcnow()):
            services.worker.notify()
    except StoreUnavailable:
        await spool_exchange(services, identity, request_messages, reply_text)
    except Exception as exc:  # the reply is already out; never let this surface as an error
        log.error("could not enqueue extraction: %s", type(exc).__name__)


async def spool_exchange(
    services: Services, identity: Identity, request_messages: list[dict[str, Any]], reply_text: str
) -> None:
    """Keep the exchange on local disk until the store is back (see ``spool``)."""
    turns = exchange_turns(request_messages, reply_text)
    if not turns:
        return
    try:
        await asyncio.to_thread(services.spool.append, identity.user, identity.session_id, identity.now, turns)
    except OSError as exc:
        log.error("could not spool an exchange: %s", type(exc).__name__)


def last_message_of(messages: list[dict[str, Any]], role: str) -> dict[str, Any]:
    return next((m for m in reversed(messages) if m.get("role") == role), {})


def reply_text_of(body: bytes) -> str:
    try:
        return content_text(json.loads(body)["choices"][0]["message"].get("content"))
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def streamed_text_of(raw: bytes) -> str:
    """The first choice's text, read from the SSE bytes as they were relayed."""
    parts = []
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            choices = json.loads(data).get("choices") or []
        except ValueError:
            continue
        for choice in choices:
            if choice.get("index", 0) == 0:
                parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)


def validate_chat_body(body: Any) -> dict[str, Any]:
    """The checks OpenAI makes before anything is sent: clear 400s instead of upstream noise."""
    if not isinstance(body, dict):
        raise SalienceError(400, "the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise SalienceError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SalienceError(400, "'messages' must be a non-empty array", param="messages", code="invalid_type")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise SalienceError(
                400, f"messages[{index}] must be an object with a 'role'", param=f"messages[{index}]", code="invalid_type"
            )
    if "user" in body and body["user"] is not None and not isinstance(body["user"], str):
        raise SalienceError(400, "'user' must be a string", param="user", code="invalid_type")
    return body
