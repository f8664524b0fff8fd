"""Extractors turn an exchange into candidate memories.

``Extractor`` is the protocol; ``SelfDisclosureExtractor`` is the offline default: it keeps
the sentences in which the user tells something about themselves or their life.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, Sequence


from salience.memory.dates import resolve_relative_dates
from salience.memory.importance import estimate_importance
from salience.memory.sentences import split_sentences
from salience.model import MemoryItem, MemoryKind, Message


@dataclass(frozen=True)
class Candidate:
    """A memory an extractor proposes, before consolidation against what is already known."""

    text: str
    kind: MemoryKind
    importance: float
    speaker: str
    created_at: datetime
    sources: tuple[str, ...]
    session_id: str | None = None
    # add: a new memory (consolidation may turn it into a reinforcement). update / delete: an
    # extractor that was shown the user's related memories (``known``) replaces or removes one.
    action: Literal["add", "update", "delete"] = "add"
    target: str | None = None  # the memory id an update or delete is about


class Extractor(Protocol):
    """Messages in, candidate memories out. ``known`` holds the user's memories most related to
    the exchange, for an extractor that sets ``uses_known_memories`` (the LLM one); the offline
    extractor only ever adds."""

    async def extract(self, messages: list[Message], known: Sequence[MemoryItem] = ()) -> list[Candidate]: ...


FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|i'll|im|me|my|mine|myself|we|we're|our|us)\b", re.IGNORECASE)
SMALL_TALK = re.compile(
    r"^(hi|hello|hey|thanks|thank you|ok|okay|yes|no|sure|good morning|good night|bye|lol)\b[\s!.,]*$"
    r"|^(hi|hello|hey)\b.{0,30}\b(again|there|back)\b[\s!.,]*$",
    re.IGNORECASE,
)
KIND_PATTERNS: list[tuple[MemoryKind, re.Pattern[str]]] = [
    ("fear", re.compile(r"\b(afraid|scared|terrified|worried|anxious|fear|dread)\b", re.I)),
    ("goal", re.compile(r"\b(i want to|i'd like to|i hope to|my goal|i plan to|i'm going to|i will|trying to)\b", re.I)),
    (
        "relationship",
        re.compile(
            r"\b(my (mom|mum|mother|dad|father|sister|sis|brother|wife|husband|partner|boyfriend|girlfriend|"
            r"son|daughter|kids?|friend|boss|manager|grandma|grandmother|grandpa|grandfather|aunt|uncle|cousin)|"
            r"married|divorced|dating|broke up)\b",
            re.I,
        ),
    ),
    ("preference", re.compile(r"\b(i (really )?(love|like|enjoy|hate|prefer|can't stand)|my favou?rite)\b", re.I)),
    ("event", re.compile(r"\b(yesterday|today|last (week|month|year|night)|just|was|were|got|went|had)\b", re.I)),
]
MIN_WORDS = 4


def classify_kind(sentence: str) -> MemoryKind:
    for kind, pattern in KIND_PATTERNS:
        if pattern.search(sentence):
            return kind
    return "fact"


SPEAKING_ROLES = {"user", "assistant"}


def speaks_for_a_person(message: Message) -> bool:
    """The user always; the assistant side only when it is a named person (an imported
    transcript between two people). An AI companion's own replies are not memories."""
    return message.role == "user" or (message.role in SPEAKING_ROLES and bool(message.name))
OTHER_SPEAKER_WEIGHT = 0.8  # what the other side says matters, but less than the user's own words


def is_self_disclosure(sentence: str) -> bool:
    """A statement about the speaker's life: first person, not a question or a pleasantry."""
    return is_statement(sentence) and bool(FIRST_PERSON.search(sentence))


PHATIC = re.compile(
    r"^(i'?m so sorry|i am so sorry|i'?m sorry to hear|that sounds|it sounds like|i understand|i hear you|"
    r"thank(s| you)|that'?s (great|awesome|amazing|wonderful|so cool)|wow|congrat\w*)\b",
    re.IGNORECASE,
)


def is_statement(sentence: str) -> bool:
    if sentence.endswith("?") or SMALL_TALK.match(sentence) or PHATIC.match(sentence):
        return False
    return len(sentence.split()) >= MIN_WORDS


def is_memorable(sentence: str) -> bool:
    """Worth keeping: any statement that is not a question, a pleasantry or small talk.
    Importance, not this filter, decides how much it counts."""
    return is_statement(sentence)


class SelfDisclosureExtractor:
    """Offline: statements from both sides of the exchange, one memory per sentence, with
    relative dates resolved against the time they were said and the speaker kept."""

    uses_known_memories = False

    async def extract(self, messages: list[Message], known: Sequence[MemoryItem] = ()) -> list[Candidate]:
        candidates = []
        for message in messages:
            if not speaks_for_a_person(message) or not message.content:
                continue
            for sentence in split_sentences(message.content):
                if not is_memorable(sentence):
                    continue
                text = resolve_relative_dates(sentence, message.created_at)
                kind = classify_kind(text)
                importance = estimate_importance(text, kind)
                if message.role != "user":
                    importance *= OTHER_SPEAKER_WEIGHT
                candidates.append(
                    Candidate(
                        text=text,
                        kind=kind,
                        importance=round(importance, 4),
                        speaker=message.name or message.role,
                        created_at=message.created_at,
                        sources=(message.id,),
                        session_id=message.session_id,
                    )
                )
        return candidates
