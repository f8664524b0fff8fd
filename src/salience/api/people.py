"""Knowing the person: the user's entities with their memories, and the arc's per-session series."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from salience.api.auth import tenant_of
from salience.api.memory import known_user, memory_json
from salience.memory.arc import compute_arc
from salience.model import Entity, MemoryItem
from salience.services import Services
from salience.settings import TenantSettings

router = APIRouter(prefix="/v1/users/{user_id}")


def entity_json(entity: Entity, memories: dict[str, MemoryItem]) -> dict[str, Any]:
    linked = sorted((memories[i] for i in entity.memory_ids if i in memories), key=lambda m: m.created_at)
    return {
        "id": entity.id,
        "object": "salience.entity",
        "type": entity.type,
        "name": entity.name,
        "aliases": entity.aliases,
        "relation": entity.relation,
        "first_seen": entity.first_seen.isoformat() if entity.first_seen else None,
        "last_seen": entity.last_seen.isoformat() if entity.last_seen else None,
        "memories": [memory_json(m) for m in linked],
    }


@router.get("/entities")
async def list_entities(
    user_id: str, request: Request, tenant: TenantSettings = Depends(tenant_of)
) -> dict[str, Any]:
    """Every entity of the user, first seen first, each with the memories that mention it."""
    services: Services = request.app.state.services
    user = await known_user(services, tenant, user_id)
    store = services.store_for(tenant.id)
    entities = await store.load_entities(user)
    memories = {m.id: m for m in await store.load_memories(user)} if entities else {}
    data = [entity_json(e, memories) for e in entities]
    return {"object": "list", "data": data}


@router.get("/arc")
async def arc(
    user_id: str,
    request: Request,
    at: datetime | None = Query(None, description="the arc as it stood then (ISO 8601)"),
    tenant: TenantSettings = Depends(tenant_of),
) -> dict[str, Any]:
    """The per-session series (mood, main topics) and the trend and themes across sessions,
    recomputed from the stored message signals."""
    services: Services = request.app.state.services
    user = await known_user(services, tenant, user_id)
    store = services.store_for(tenant.id)
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    result = compute_arc(await store.load_message_signals(user), await store.load_entities(user), at)
    return {
        "object": "salience.arc",
        "user": user_id,
        **result.summary_json(),
        "sessions": [p.to_json() for p in result.sessions],
    }
