"""Operator endpoints, behind the admin key (salience.yaml ``admin_key``): never a tenant's key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from salience.api.auth import admin_of
from salience.compliance.audit import verify_tenant
from salience.errors import SalienceError
from salience.services import Services

router = APIRouter(prefix="/v1/admin", dependencies=[Depends(admin_of)])


@router.get("/tenants")
async def tenants(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    data = []
    for tenant in services.config.tenants.values():
        await services.auditor.record_quietly(tenant.id, None, "admin.access", ["tenants"])
        data.append({
            "id": tenant.id, "object": "salience.tenant", "region": tenant.region,
            "api_keys": len(tenant.api_keys), "encrypted": bool(tenant.master_key),
            "retention_days": tenant.retention_days, "debug_headers": tenant.debug_headers,
        })
    return {"object": "list", "data": data}


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str | None = None


@router.post("/audit/verify")
async def verify(payload: VerifyRequest, request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    names = [payload.tenant] if payload.tenant else list(services.config.tenants)
    results = []
    for name in names:
        if name not in services.config.tenants:
            raise SalienceError(404, f"no tenant {name!r}", param="tenant", code="tenant_not_found")
        # verify first, then record the access: the entry is appended to a chain just checked
        results.append((await verify_tenant(services.store_for(name), name)).as_json())
        await services.auditor.record_quietly(name, None, "admin.access", ["audit.verify"])
    return {"object": "salience.audit_verification", "ok": all(r["ok"] for r in results), "tenants": results}
