"""Screening a request's new user messages: detect, remember, decide on escalation.

``SafetyService.screen`` runs on the request path before the upstream call. Detection is
local and fast; only a flagged message costs one store transaction (the safety record,
the pinned safety memory and the escalation event, saved together). Sending is the
``EscalationSender``'s job, in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from salience.memory.embed import StartsEarly
from salience.model import MemoryItem, Message, OutboxEvent, SafetyRecord, UserRef, stable_id
from salience.safety.detect import Flag, RuleBasedDetector, SafetyDetector, strongest_first
from salience.safety.escalate import escalation_for
from salience.safety.policy import CATEGORY_WORDS, SafetyPolicy, build_policy
from salience.safety.second_opinion import LLMSafetyClassifier, merge_flags
from salience.settings import Config, TenantSettings
from salience.store.base import Store

log = logging.getLogger("salience.safety")

MAX_SEEN_MESSAGE_IDS = 200
MAX_PINNED_SOURCES = 50


@dataclass
class Screening:
    flags: list[Flag] = field(default_factory=list)  # strongest first, over all screened messages

    @property
    def header(self) -> str:
        """``suicidal_ideation:risk`` (strongest first, comma separated), or ``none``."""
        return ",".join(f"{f.category}:{f.severity}" for f in self.flags) or "none"


class SafetyService:
    def __init__(
        self,
        store: Store,
        policies: dict[str, SafetyPolicy],
        detector: SafetyDetector | None = None,
        second_opinions: dict[str, LLMSafetyClassifier] | None = None,
    ) -> None:
        self.store = store
        self.policies = policies
        self.detector = detector or RuleBasedDetector()
        self.second_opinions = second_opinions or {}
        # Told of every escalation event saved (the audit log); set by ``Services``.
        self.on_escalation: Callable[[UserRef, list[str]], Awaitable[None]] | None = None

    @classmethod
    def build(cls, config: Config, store: Store, detector: SafetyDetector | None = None) -> "SafetyService":
        directory = Path(config.directory)
        return cls(
            store,
            {tid: build_policy(tenant, directory) for tid, tenant in config.tenants.items()},
            detector,
            {
                tid: LLMSafetyClassifier(tenant.safety.second_opinion)
                for tid, tenant in config.tenants.items()
                if tenant.safety.second_opinion is not None
            },
        )

    def start(self, text: str) -> None:
        """Let the detector begin work that runs off the event loop (its embedding), if it has any."""
        if isinstance(self.detector, StartsEarly) and text:
            self.detector.start(text)

    async def classify(self, tenant: TenantSettings, text: str) -> list[Flag]:
        """The flags for one text: the offline detector, and the tenant's second opinion if any."""
        flags = await self.detector.detect(text)
        second = self.second_opinions.get(tenant.id)
        if second is None or (not flags and second.settings.when == "flagged"):
            return flags
        try:
            return merge_flags(flags, await asyncio.wait_for(second.detect(text), second.settings.timeout_seconds))
        except Exception as exc:  # the offline answer stands on its own
            log.warning("second opinion unavailable for tenant %s: %s", tenant.id, type(exc).__name__)
            return flags

    async def screen(
        self, tenant: TenantSettings, user: UserRef | None, session_id: str | None, messages: list[Message], now: datetime
    ) -> Screening:
        """Flags for the new user messages; for a known user, a flagged message is remembered
        (pinned) and, at or above the threshold, escalated once per episode."""
        per_message = [(message, await self.classify(tenant, message.content)) for message in messages]
        flagged = [(message, flags) for message, flags in per_message if flags]
        if not flagged:
            return Screening()
        all_flags = strongest_first(merge_flags(*(flags for _, flags in flagged)))
        if user is not None and session_id is not None:
            await self.remember(tenant, user, session_id, flagged, now, escalate=True)
        return Screening(all_flags)

    async def screen_history(self, tenant: TenantSettings, user: UserRef, messages: list[Message]) -> int:
        """Imported transcripts: disclosures are pinned with their real dates, but nothing is
        escalated (a safety team acts on what happens now). Returns how many were flagged."""
        flagged = [
            (message, flags)
            for message in messages
            if message.role == "user" and (flags := await self.classify(tenant, message.content))
        ]
        for message, flags in flagged:  # one at a time: each keeps its own session and date
            await self.remember(tenant, user, message.session_id, [(message, flags)], message.created_at, escalate=False)
        return len(flagged)

    async def remember(
        self,
        tenant: TenantSettings,
        user: UserRef,
        session_id: str,
        flagged: list[tuple[Message, list[Flag]]],
        now: datetime,
        escalate: bool,
    ) -> None:
        record = await self.store.get_safety_record(user)
        pinned = {m.id: m for m in await self.pinned_memories(user)}
        events: list[OutboxEvent] = []
        for message, flags in flagged:
            if record is not None and message.id in record.seen_message_ids:
                continue  # the same message resent (a retry): already counted
            record = note_disclosure(record, message, flags)
            for flag in flags:
                item = pinned_item(user, flag, message, pinned)
                pinned[item.id] = item
            if escalate:
                record, event = escalation_for(
                    record, tenant, user, session_id, message.id, message.content, flags[0], now
                )
                events.extend([event] if event is not None else [])
        if record is None:
            return
        changed = [m for m in pinned.values() if message_sources_changed(m, flagged)]
        await self.store.save_safety_update(user, record, changed, events, now)
        if events and self.on_escalation is not None:
            await self.on_escalation(user, [event.id for event in events])

    async def pinned_memories(self, user: UserRef) -> list[MemoryItem]:
        return [m for m in await self.store.load_memories(user) if m.pinned and m.kind == "safety"]

    def note(self, tenant: TenantSettings, pinned: list[MemoryItem], screening: Screening) -> str:
        return self.policies[tenant.id].note(pinned, screening.flags)


def note_disclosure(record: SafetyRecord | None, message: Message, flags: list[Flag]) -> SafetyRecord:
    strongest = flags[0]
    at = message.created_at
    if record is None:
        record = SafetyRecord(first_flagged_at=at, last_flagged_at=at)
    return replace(
        record,
        first_flagged_at=min(record.first_flagged_at, at),
        last_flagged_at=max(record.last_flagged_at, at),
        disclosures=record.disclosures + 1,
        latest_category=strongest.category,
        latest_severity=strongest.severity,
        seen_message_ids=[*record.seen_message_ids, message.id][-MAX_SEEN_MESSAGE_IDS:],
    )


def pinned_item(user: UserRef, flag: Flag, message: Message, pinned: dict[str, MemoryItem]) -> MemoryItem:
    """One pinned memory per category, updated in place: latest severity, first and last date, count.

    Its text is ours, never the user's words: no detail (a method, a name) is repeated to
    the model in every later conversation.
    """
    memory_id = stable_id("mem", user.tenant, user.user, "safety", flag.category)
    text = f"{CATEGORY_WORDS[flag.category]}; latest severity: {flag.severity}"
    existing = pinned.get(memory_id)
    if existing is None:
        return MemoryItem(
            id=memory_id, text=text, kind="safety", importance=1.0, speaker="salience", created_at=message.created_at,
            last_reinforced_at=message.created_at, sources=[message.id], session_id=message.session_id, pinned=True,
        )
    if message.id in existing.sources:
        return existing
    return replace(
        existing,
        text=text,
        last_reinforced_at=max(message.created_at, existing.last_reinforced_at or existing.created_at),
        mention_count=existing.mention_count + 1,
        sources=[*existing.sources, message.id][-MAX_PINNED_SOURCES:],
    )


def message_sources_changed(item: MemoryItem, flagged: list[tuple[Message, list[Flag]]]) -> bool:
    ids = {message.id for message, _ in flagged}
    return any(source in ids for source in item.sources)


