"""Consolidation: a new candidate either reinforces a memory we already hold or becomes one.

Mentioning the same thing again must strengthen the existing item, not add a duplicate.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from salience.memory.extract import Candidate
from salience.memory.vectors import similarities
from salience.model import MemoryItem, UserRef, stable_id

SAME_MEMORY_SIMILARITY = 0.92


def consolidate(
    user: UserRef,
    candidates: list[Candidate],
    embeddings: np.ndarray,
    known: list[MemoryItem],
    known_matrix: np.ndarray,
) -> tuple[list[MemoryItem], list[MemoryItem]]:
    """Split candidates into new memories and reinforcements of the ``known`` ones (the user's
    ranked memories, ``known_matrix`` their embeddings, one row each). A candidate is compared
    with the known memories and with the candidates added before it.

    All candidates are compared with the known memories in one product, which reads the matrix
    once (at 10k memories it is 15 MB; it used to be read, and copied to append each addition,
    once per candidate)."""
    dim = embeddings.shape[1] if embeddings.ndim == 2 else 0
    known_matrix = known_matrix.reshape(len(known), dim) if known else np.zeros((0, dim), dtype=np.float32)
    with_known = known_matrix @ np.asarray(embeddings).T if known else None  # (known, candidates)
    added: list[MemoryItem] = []
    added_vectors: list[np.ndarray] = []
    reinforced: dict[str, MemoryItem] = {}

    for number, (candidate, vector) in enumerate(zip(candidates, embeddings)):
        memory_id = stable_id("mem", user.tenant, user.user, *candidate.sources, candidate.text)
        match = _most_similar(None if with_known is None else with_known[:, number], added_vectors, vector)
        if match is not None:
            matched = known[match] if match < len(known) else added[match - len(known)]
            target = reinforced.get(matched.id, matched)
            if memory_id in target.sources or set(candidate.sources) <= set(target.sources):
                continue  # this very message already counted
            reinforced[target.id] = replace(
                target,
                mention_count=target.mention_count + 1,
                last_reinforced_at=max(candidate.created_at, target.last_reinforced_at or target.created_at),
                sources=[*target.sources, *(s for s in candidate.sources if s not in target.sources)],
                importance=max(target.importance, candidate.importance),
            )
            continue
        item = MemoryItem(
            id=memory_id,
            text=candidate.text,
            kind=candidate.kind,
            importance=candidate.importance,
            speaker=candidate.speaker,
            created_at=candidate.created_at,
            last_reinforced_at=candidate.created_at,
            sources=list(candidate.sources),
            session_id=candidate.session_id,
            embedding=vector,
        )
        added.append(item)
        added_vectors.append(vector)
    return added, list(reinforced.values())


def _most_similar(with_known: np.ndarray | None, added: list[np.ndarray], vector: np.ndarray) -> int | None:
    """The position of the most similar memory among the known ones, then those added so far
    (the first of equals), if it is similar enough."""
    scores = [] if with_known is None else [with_known]
    if added:
        scores.append(similarities(np.stack(added), vector))
    if not scores:
        return None
    similarity = np.concatenate(scores)
    best = int(np.argmax(similarity))
    return best if similarity[best] >= SAME_MEMORY_SIMILARITY else None


def replacement(user: UserRef, candidate: Candidate, target: MemoryItem, vector: np.ndarray) -> MemoryItem:
    """The memory that replaces ``target`` when an extractor updates it ("we broke up" replaces
    "is dating Alex"): new text and id, the history of mentions carried over."""
    return MemoryItem(
        id=stable_id("mem", user.tenant, user.user, *candidate.sources, candidate.text),
        text=candidate.text,
        kind=candidate.kind,
        importance=max(candidate.importance, target.importance),
        speaker=candidate.speaker,
        created_at=candidate.created_at,
        last_reinforced_at=candidate.created_at,
        mention_count=target.mention_count,
        sources=[*target.sources, *(s for s in candidate.sources if s not in target.sources)],
        session_id=candidate.session_id,
        embedding=vector,
    )
