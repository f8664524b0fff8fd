"""Traces: the exact messages a completion sent upstream, for tenants with debug headers on."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from salience.api.auth import tenant_of
from salience.errors import SalienceError
from salience.services import Services
from salience.settings import TenantSettings

router = APIRouter()


@router.get("/v1/traces/{trace_id}")
async def get_trace(trace_id: str, request: Request, tenant: TenantSettings = Depends(tenant_of)) -> dict[str, Any]:
    services: Services = request.app.state.services
    trace = await services.store_for(tenant.id).get_trace(tenant.id, trace_id) if tenant.debug_headers else None
    if trace is None:
        raise SalienceError(404, f"no trace {trace_id!r}", param="trace_id", code="trace_not_found")
    return trace
