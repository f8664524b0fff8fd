"""The request path of a chat completion, top to bottom in one place:

    identify -> screen -> recall -> inject -> upstream -> respond -> enqueue extraction, wake the escalation sender

Everything that makes the reply slower lives here where it can be seen; everything that
can wait (extraction, webhook delivery) happens after the last byte has left.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from salience.errors import SalienceError
from salience.memory.inject import inject_context, render_context
from salience.memory.recall import Recall
from salience.model import ExtractionJob, Message, UserRef, content_text, new_id, stable_id, utcnow
from salience.safety.screen import Screening
from salience.services import Services
from salience.settings import TenantSettings

log = logging.getLogger("salience.pipeline")

USER_HEADER = "x-salience-user"
SESSION_HEADER = "x-salience-session"
MAX_STREAM_CAPTURE = 1_000_000  # bytes of a streamed reply kept for extraction
MAX_USER_ID = 256


@dataclass
class Identity:
    user: UserRef
    session_id: str
    now: datetime


async def chat_completion(request: Request, tenant: TenantSettings, body: dict[str, Any]) -> Response:
    services: Services = request.app.state.services
    upstream = services.upstreams[tenant.id]
    streaming = bool(body.get("stream"))

    # identify
    identity = await identify(request, tenant, body, services)
    if identity is None:
        return await forward_anonymous(services, tenant, upstream, body, streaming)

    # screen: every new user message, before anything goes upstream; a disclosure is pinned
    screening = await services.safety.screen(
        tenant, identity.user, identity.session_id, new_user_messages(identity, body["messages"]), identity.now
    )

    # recall
    query = content_text(last_message_of(body["messages"], "user").get("content"))
    recall = await services.recaller.recall(
        identity.user, query, tenant.memory, model=body.get("model") or tenant.upstream.model
    )

    # inject: the safety note (pinned, outside the budget) first, then the recalled memories
    safety_note = services.safety.note(tenant, recall.pinned, screening)
    context = render_context([m.item for m in recall.memories], safety_note) if safety_note else recall.context
    upstream_body = {**body, "messages": inject_context(body["messages"], context)}
    headers = {"X-Salience-Memory": "on", "X-Salience-Session": identity.session_id}
    if tenant.debug_headers:
        headers.update(await debug_headers(services, tenant, identity, recall, screening, upstream_body))

    # upstream -> respond -> enqueue extraction (after the last byte)
    if not streaming:
        reply = await upstream.complete(upstream_body)
        return Response(
            reply.body,
            status_code=reply.status,
            headers={**reply.headers, **headers},
            background=BackgroundTask(
                after_reply, services, identity, body["messages"], reply_text_of(reply.body)
            ),
        )

    opened = await upstream.stream(upstream_body)
    captured = bytearray()

    async def relay():
        async for chunk in opened.chunks:
            if len(captured) < MAX_STREAM_CAPTURE:
                captured.extend(chunk)
            yield chunk

    async def enqueue_streamed() -> None:
        await after_reply(services, identity, body["messages"], streamed_text_of(bytes(captured)))

    return StreamingResponse(
        relay(),
        headers={**opened.headers, **headers},
        media_type="text/event-stream",
        background=BackgroundTask(enqueue_streamed),
    )


async def identify(
    request: Request, tenant: TenantSettings, body: dict[str, Any], services: Services
) -> Identity | None:
    """The end user (header wins over the body's ``user``) and their session; None: no user."""
    user_id = (request.headers.get(USER_HEADER) or "").strip() or (body.get("user") or "").strip()
    if not user_id:
        return None
    if len(user_id) > MAX_USER_ID:
        raise SalienceError(400, f"the user id must be at most {MAX_USER_ID} characters", param="user", code="invalid_value")
    user = UserRef(tenant.id, user_id)
    now = utcnow()
    session_id = await services.store.resolve_session(
        user,
        request.headers.get(SESSION_HEADER) or None,
        now,
        timedelta(minutes=tenant.memory.session_gap_minutes),
    )
    return Identity(user, session_id, now)


async def forward_anonymous(
    services: Services, tenant: TenantSettings, upstream: Any, body: dict[str, Any], streaming: bool
) -> Response:
    """No user: nothing is read or written, but a crisis still gets guidance and resources."""
    headers = {"X-Salience-Memory": "off"}
    text = content_text(last_message_of(body["messages"], "user").get("content"))
    screening = Screening(await services.safety.classify(tenant, text)) if text else Screening()
    if screening.flags:
        body = {**body, "messages": inject_context(body["messages"], render_context([], services.safety.note(tenant, [], screening)))}
    if tenant.debug_headers:
        headers["X-Salience-Safety"] = screening.header
    return await forward(upstream, body, streaming, headers)


async def forward(upstream: Any, body: dict[str, Any], streaming: bool, headers: dict[str, str]) -> Response:
    """Pass-through: no memory read or written."""
    if not streaming:
        reply = await upstream.complete(body)
        return Response(reply.body, status_code=reply.status, headers={**reply.headers, **headers})
    opened = await upstream.stream(body)
    return StreamingResponse(opened.chunks, headers={**opened.headers, **headers}, media_type="text/event-stream")


async def debug_headers(
    services: Services,
    tenant: TenantSettings,
    identity: Identity,
    recall: Recall,
    screening: Screening,
    upstream_body: dict[str, Any],
) -> dict[str, str]:
    """Headers that reveal what memory did, and a stored trace of what went upstream."""
    trace_id = new_id("trace")
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
    )
    return {
        "X-Salience-Memories": ",".join(recall.ids),
        "X-Salience-Context-Tokens": str(recall.tokens),
        "X-Salience-Confidence": f"{recall.confidence:.3f}",
        "X-Salience-Trace": trace_id,
        "X-Salience-Safety": screening.header,
    }


async def after_reply(
    services: Services, identity: Identity, request_messages: list[dict[str, Any]], reply_text: str
) -> None:
    """Once the reply is out: queue extraction, and let the escalation sender deliver."""
    await enqueue_extraction(services, identity, request_messages, reply_text)
    services.escalations.notify()


async def enqueue_extraction(
    services: Services, identity: Identity, request_messages: list[dict[str, Any]], reply_text: str
) -> None:
    """Queue the exchange (the latest user turn and the reply) for extraction."""
    try:
        messages = exchange_messages(identity, request_messages, reply_text)
        if not messages:
            return
        job = ExtractionJob(
            id=stable_id("job", *(m.id for m in messages)),
            user=identity.user,
            session_id=identity.session_id,
            messages=messages,
        )
        if await services.store.enqueue_extraction(job, utcnow()):
            services.worker.notify()
    except Exception as exc:  # the reply is already out; never let this surface as an error
        log.error("could not enqueue extraction: %s", type(exc).__name__)


def exchange_messages(identity: Identity, request_messages: list[dict[str, Any]], reply_text: str) -> list[Message]:
    """The trailing user messages of the request and the assistant's reply."""
    exchange = new_user_messages(identity, request_messages)
    if reply_text:
        exchange.append(session_message(identity, len(request_messages), "assistant", reply_text, None))
    return exchange


def new_user_messages(identity: Identity, request_messages: list[dict[str, Any]]) -> list[Message]:
    """The trailing user messages of the request: what the user has just said."""
    start = len(request_messages)
    while start > 0 and request_messages[start - 1].get("role") == "user":
        start -= 1
    messages = []
    for index in range(start, len(request_messages)):
        message = request_messages[index]
        text = content_text(message.get("content"))
        if text:
            messages.append(session_message(identity, index, "user", text, message.get("name")))
    return messages


def session_message(identity: Identity, index: int, role: str, content: str, name: str | None) -> Message:
    """A message's id is derived from its position and content in the session, so the same
    message, resent as history with every later request, always has the same id."""
    return Message(
        id=stable_id("msg", identity.user.tenant, identity.user.user, identity.session_id, str(index), role, content),
        role=role,
        content=content,
        name=name,
        created_at=identity.now,
        session_id=identity.session_id,
    )


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
