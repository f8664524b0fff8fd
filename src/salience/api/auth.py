"""Which tenant is calling: the bearer key, matched by hash in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request, Response

from salience.errors import SalienceError
from salience.services import Services
from salience.settings import TenantSettings, hash_api_key


REGION_HEADER = "X-Salience-Region"

# Both dependencies are ``async def`` though they never wait: FastAPI runs a plain ``def``
# dependency on its thread pool, a hand-off to another thread on every request (0.3-0.5 ms of
# a reply, py-spy on the gateway benchmark) for a dictionary lookup.


async def tenant_of(request: Request, response: Response) -> TenantSettings:
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
    response.headers[REGION_HEADER] = tenant.region  # where this tenant's data lives
    return tenant


async def admin_of(request: Request) -> None:
    """Operator endpoints: the admin key from salience.yaml, compared in constant time.
    Without one configured they do not exist (404)."""
    services: Services = request.app.state.services
    configured = services.config.server.admin_key
    if not configured:
        raise SalienceError(404, f"unknown path {request.url.path}")
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(hash_api_key(key.strip()), hash_api_key(configured)):
        raise SalienceError(401, "incorrect admin key provided", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
