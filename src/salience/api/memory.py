"""The memory API: import, recall, and reading what is remembered, per tenant and user."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from salience.api.auth import tenant_of
from salience.compliance.erasure import erase_memory, receipt_json
from salience.errors import SalienceError
from salience.memory.importer import ImportRequest, import_sessions
from salience.memory.recall import RecalledMemory
from salience.model import MemoryItem, UserRef
from salience.pipeline import MAX_USER_ID
from salience.services import Services
from salience.settings import TenantSettings

router = APIRouter(prefix="/v1/users/{user_id}")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def memory_json(item: MemoryItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "object": "salience.memory",
        "text": item.text,
        "kind": item.kind,
        "importance": round(item.importance, 4),
        "speaker": item.speaker,
        "sources": item.sources,
        "session_id": item.session_id,
        "created_at": _iso(item.created_at),
        "last_reinforced_at": _iso(item.last_reinforced_at),
        "mention_count": item.mention_count,
        "pinned": item.pinned,
    }


def recalled_json(recalled: RecalledMemory) -> dict[str, Any]:
    return {**memory_json(recalled.item), "score": round(recalled.score, 4)}


def user_ref(tenant: TenantSettings, user_id: str) -> UserRef:
    if not user_id.strip() or len(user_id) > MAX_USER_ID:
        raise SalienceError(400, f"user_id must be 1 to {MAX_USER_ID} characters", param="user_id")
    return UserRef(tenant.id, user_id)


async def known_user(services: Services, tenant: TenantSettings, user_id: str) -> UserRef:
    """The user, if the caller's tenant holds anything of theirs; else 404. A user of another
    tenant is indistinguishable from one that never existed: existence does not leak."""
    user = user_ref(tenant, user_id)
    if not await services.store_for(tenant.id).user_exists(user):
        raise SalienceError(404, f"no user {user_id!r}", param="user_id", code="user_not_found")
    return user


@router.post("/import")
async def import_transcripts(
    user_id: str, payload: ImportRequest, request: Request, tenant: TenantSettings = Depends(tenant_of)
) -> dict[str, Any]:
    services: Services = request.app.state.services
    user = user_ref(tenant, user_id)
    result = await import_sessions(
        services.store_for(tenant.id),
        services.worker,
        user,
        payload.sessions,
        screen=lambda messages: services.safety.screen_history(tenant, user, messages),
    )
    return {
        "object": "salience.import",
        "user": user_id,
        "sessions": result.sessions,
        "messages": result.messages,
        "memories_added": result.memories_added,
        "memories_reinforced": result.memories_reinforced,
        "safety_flagged": result.safety_flagged,
    }


class RecallRequest(BaseModel):
    query: str
    budget_tokens: int | None = Field(None, ge=0, le=100_000)
    at: datetime | None = None


@router.post("/recall")
async def recall(
    user_id: str, payload: RecallRequest, request: Request, tenant: TenantSettings = Depends(tenant_of)
) -> dict[str, Any]:
    services: Services = request.app.state.services
    at = payload.at
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    result = await services.recaller.recall(
        await known_user(services, tenant, user_id),
        payload.query,
        tenant.memory,
        budget_tokens=payload.budget_tokens,
        at=at,
        model=tenant.upstream.model,
    )
    return {
        "object": "salience.recall",
        "context": result.context,
        "tokens": result.tokens,
        "confidence": round(result.confidence, 4),
        "found": result.found,
        "items": [recalled_json(m) for m in result.memories],
        "arc": result.arc.summary_json() if result.arc is not None else None,
    }


@router.get("/memories")
async def list_memories(
    user_id: str,
    request: Request,
    limit: int = Query(20, ge=1, le=1000),
    after: str | None = Query(None, description="the last id of the previous page"),
    tenant: TenantSettings = Depends(tenant_of),
) -> dict[str, Any]:
    services: Services = request.app.state.services
    items, has_more = await services.store_for(tenant.id).list_memories(await known_user(services, tenant, user_id), limit, after)
    data = [memory_json(item) for item in items]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


@router.get("/memories/{memory_id}")
async def get_memory(
    user_id: str, memory_id: str, request: Request, tenant: TenantSettings = Depends(tenant_of)
) -> dict[str, Any]:
    services: Services = request.app.state.services
    item = await services.store_for(tenant.id).get_memory(await known_user(services, tenant, user_id), memory_id)
    if item is None:
        raise SalienceError(404, f"no memory {memory_id!r} for this user", param="memory_id", code="memory_not_found")
    return memory_json(item)


@router.delete("/memories/{memory_id}")
async def delete_memory(
    user_id: str, memory_id: str, request: Request, tenant: TenantSettings = Depends(tenant_of)
) -> dict[str, Any]:
    """Erase one memory, a pinned safety memory included, and everything derived from it: it is
    never injected, exported or traced again. The body carries the erasure receipt."""
    services: Services = request.app.state.services
    receipt = await erase_memory(services, await known_user(services, tenant, user_id), memory_id)
    if receipt is None:
        raise SalienceError(404, f"no memory {memory_id!r} for this user", param="memory_id", code="memory_not_found")
    return {
        "id": memory_id, "object": "salience.memory.deleted", "deleted": True,
        "receipt": receipt_json(receipt, tenant.region),
    }
