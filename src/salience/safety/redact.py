"""Keeping crisis sentences out of ordinary memories.

A flagged sentence is remembered as the pinned safety note, in salience's words. Stored as an
ordinary memory it would come back by relevance, verbatim, with whatever method or detail the
user gave: exactly what safe-messaging guidance says not to repeat. So the extractor's
candidates pass through the detector, and flagged ones are dropped.
"""

from __future__ import annotations

from typing import Sequence

from salience.memory.extract import Candidate, Extractor
from salience.model import MemoryItem, Message
from salience.safety.detect import RuleBasedDetector, SafetyDetector


class WithoutDisclosures:
    """An ``Extractor`` that drops the candidates the offline detector flags (the same detector
    that screens requests)."""

    def __init__(self, inner: Extractor, detector: SafetyDetector | None = None) -> None:
        self.inner = inner
        self.detector = detector or RuleBasedDetector()

    @property
    def uses_known_memories(self) -> bool:
        return bool(getattr(self.inner, "uses_known_memories", False))

    async def extract(self, messages: list[Message], known: Sequence[MemoryItem] = ()) -> list[Candidate]:
        candidates = await (self.inner.extract(messages, known) if known else self.inner.extract(messages))
        return [c for c in candidates if c.action == "delete" or not await self.detector.detect(c.text)]
