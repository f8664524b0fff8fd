"""Erasure (GDPR Art. 17): one memory, or a whole user, with a receipt and an audit entry.

The store removes the data and everything derived from it in one place
(``Store.erase_memory`` / ``Store.erase_user``); here the receipt is recorded in the audit log
(ids and counts, never content) and this process's recall cache forgets the user, besides the
version bump every other replica's cache sees.
"""

from __future__ import annotations

from typing import Any

from salience.model import ErasureReceipt, UserRef, utcnow
from salience.services import Services


async def erase_memory(
    services: Services, user: UserRef, memory_id: str, request_id: str | None = None, action: str = "memory.erase"
) -> ErasureReceipt | None:
    receipt = await services.store_for(user.tenant).erase_memory(user, memory_id, utcnow())
    if receipt is None:
        return None
    services.recaller.forget(user)
    await services.auditor.record(user.tenant, user.user, action, [memory_id], request_id)
    return receipt


async def erase_user(services: Services, user: UserRef, request_id: str | None = None) -> ErasureReceipt:
    receipt = await services.store_for(user.tenant).erase_user(user, utcnow())
    services.recaller.forget(user)
    await services.auditor.record(user.tenant, user.user, "user.erase", [], request_id)
    return receipt


def receipt_json(receipt: ErasureReceipt, region: str) -> dict[str, Any]:
    return {
        "object": "salience.erasure_receipt",
        "user": receipt.user.user,
        "memory_id": receipt.memory_id,
        "erased_at": receipt.erased_at.isoformat(),
        "region": region,
        "removed": dict(sorted(receipt.removed.items())),
        "total": sum(receipt.removed.values()),
    }
