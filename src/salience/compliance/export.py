"""Export (GDPR Art. 15 and 20): everything held about one user, as one JSON document.

Memories with their scores (importance, current salience) and the messages they came from,
the entities with the ids of the memories that mention them, the arc (per-session series,
trend, recurring themes), the safety record, and the audit entries about the user. The export
itself is recorded in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from salience.memory.arc import compute_arc
from salience.memory.salience import salience_array
from salience.model import UserRef, utcnow
from salience.services import Services

PAGE = 500


async def export_user(
    services: Services, user: UserRef, request_id: str | None = None, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    from salience.api.memory import memory_json  # the same shape the memory API returns

    store = services.store_for(user.tenant)
    tenant = services.config.tenants[user.tenant]
    now = utcnow()
    memories: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page, more = await store.list_memories(user, PAGE, after)
        if not page:
            break
        sources = {m.id: m for m in await store.load_messages(user, [s for item in page for s in item.sources])}
        scores = salience_array(
            np.array([m.importance for m in page], dtype=np.float64),
            np.array([max(m.created_at, m.last_reinforced_at or m.created_at).timestamp() for m in page]),
            np.array([m.mention_count - 1 for m in page], dtype=np.float64),
            now.timestamp(),
            tenant.memory.half_life_days,
            np.array([m.pinned for m in page], dtype=bool),
        )
        for item, score in zip(page, scores):
            memories.append({
                **memory_json(item),
                "salience": round(float(score), 4),
                "source_messages": [
                    {"id": s.id, "role": s.role, "name": s.name, "content": s.content,
                     "session_id": s.session_id, "created_at": s.created_at.isoformat()}
                    for s in (sources.get(source_id) for source_id in item.sources) if s is not None
                ],
            })
        if progress is not None:
            progress(len(page))
        after = page[-1].id
        if not more:
            break
    from salience.api.people import entity_json  # the shape the entities endpoint returns

    entities = await store.load_entities(user)
    arc = compute_arc(await store.load_message_signals(user), entities, now)
    record = await store.get_safety_record(user)
    await services.auditor.record(user.tenant, user.user, "export", [], request_id)
    audit = await store.list_audit(user.tenant, user.user)
    return {
        "object": "salience.export",
        "tenant": user.tenant,
        "user": user.user,
        "region": tenant.region,
        "exported_at": now.isoformat(),
        "memories": memories,
        "entities": [{**entity_json(e, {}), "memory_ids": list(e.memory_ids)} for e in entities],
        "arc": {**arc.summary_json(), "sessions": [p.to_json() for p in arc.sessions]},
        "safety_record": record.to_json() if record is not None else None,
        "audit": [entry.to_json() for entry in audit],
    }
