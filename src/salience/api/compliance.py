"""Compliance endpoints of a tenant's users: erase the user, export everything, read the audit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from salience.api.auth import tenant_of
from salience.api.memory import known_user, user_ref
from salience.compliance.erasure import erase_user, receipt_json
from salience.compliance.export import export_user
from salience.services import Services
from salience.settings import TenantSettings

router = APIRouter(prefix="/v1/users/{user_id}")


@router.delete("")
async def delete_user(user_id: str, request: Request, tenant: TenantSettings = Depends(tenant_of)) -> dict[str, Any]:
    """Erase the user entirely (their data key included); the audit log keeps ids only."""
    services: Services = request.app.state.services
    receipt = await erase_user(services, await known_user(services, tenant, user_id))
    return {"id": user_id, "object": "salience.user.deleted", "deleted": True, "receipt": receipt_json(receipt, tenant.region)}


@router.get("/export")
async def export(user_id: str, request: Request, tenant: TenantSettings = Depends(tenant_of)) -> dict[str, Any]:
    services: Services = request.app.state.services
    return await export_user(services, await known_user(services, tenant, user_id))


@router.get("/audit")
async def audit(user_id: str, request: Request, tenant: TenantSettings = Depends(tenant_of)) -> dict[str, Any]:
    """The audit entries about this user, in chain order (ids and actions, no content). They
    outlive an erased user, so the erasure itself stays provable; a user the tenant never had
    (or another tenant's) has no entries in this tenant's chain and gets 404."""
    services: Services = request.app.state.services
    user = user_ref(tenant, user_id)
    entries = await services.auditor.for_user(user)
    if not entries:
        await known_user(services, tenant, user_id)
    return {"object": "list", "data": [entry.to_json() for entry in entries]}
