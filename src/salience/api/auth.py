"""Which tenant is calling: the bearer key, matched by hash in constant time."""

from __future__ import annotations

from fastapi import Request

from salience.errors import SalienceError
from salience.services import Services
from salience.settings import TenantSettings


def tenant_of(request: Request) -> TenantSettings:
    services: Services = request.app.state.services
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise SalienceError(
            401,
            "missing API key: send it as 'Authorization: Bearer <key>'",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    tenant = services.tenants.by_api_key(key.strip())
    if tenant is None:
        raise SalienceError(401, "incorrect API key provided", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    return tenant
