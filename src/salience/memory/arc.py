"""The longitudinal arc: how the user has been across sessions.

Per user message, a ``MessageSignal`` is stored: its mood (VADER's compound score, -1..1), its
topics (labels from ``TOPICS`` and the ids of the entities its memories mention) and whether the
safety detector flagged it. Everything below is computed from those rows on read, so the
per-session series can always be rebuilt from stored data and saving a signal twice changes
nothing.

    per session     mood = mean compound of the user's messages; main topics by message count
    mood trend      over the last ``WINDOW`` sessions: the least-squares slope per session, and
                    the run of sessions each lower (or higher) than the one before
    recurring       a topic or entity present in at least ``RECURRING_AT`` sessions, with the count
    crisis-adjacent a topic that shares a session with a flagged message in the latest session
                    and never did before

The arc is injected (a few budgeted lines inside the memory block) only when it is significant:
a falling or rising mood, or a topic newly turning crisis-adjacent.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from salience.memory.entities import theme_label
from salience.model import Entity, Message, MessageSignal

WINDOW = 5  # sessions the mood trend looks at
MIN_SESSIONS = 3  # fewer than this and there is no trend to speak of
SLOPE = 0.1  # compound points per session that count as a trend
STEP = 0.05  # a session is "lower" than the one before by at least this
RECURRING_AT = 3  # sessions a theme must come back in
MAX_THEMES = 5
ENTITY_TOPIC = "entity:"


def _topic(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(words) + r")\b", re.IGNORECASE)


# What a message is about, by label. Mood comes from VADER, never from these words.
TOPICS: list[tuple[str, re.Pattern[str]]] = [
    ("health", _topic(r"diagnos\w*", r"cancer", r"chemo\w*", r"hospital\w*", r"surgery", r"sick", r"ill(ness)?",
                      r"doctors?", r"medication", r"treatment", r"symptoms?", r"biopsy", r"scan", r"pain")),
    ("grief", _topic(r"died", r"death", r"passed away", r"funeral", r"grie\w*", r"mourn\w*", r"loss")),
    ("family", _topic(r"mom", r"mum", r"mother", r"dad", r"father", r"sister", r"sis", r"brother", r"parents?",
                      r"family", r"son", r"daughter", r"kids?", r"children", r"grand\w+", r"aunt", r"uncle", r"cousin")),
    ("romantic relationship", _topic(r"boyfriend", r"girlfriend", r"partner", r"husband", r"wife", r"dating",
                                     r"broke up", r"break-?up", r"divorc\w*", r"marriage", r"married", r"ex")),
    ("work", _topic(r"jobs?", r"work(ing)?", r"boss", r"manager", r"career", r"office", r"fired", r"laid off",
                    r"promot\w*", r"coworkers?", r"colleagues?", r"interview\w*")),
    ("money", _topic(r"money", r"rent", r"debt", r"bills?", r"loan", r"afford", r"broke", r"savings")),
    ("school", _topic(r"school", r"college", r"university", r"class(es)?", r"exams?", r"study\w*", r"homework",
                      r"degree", r"teacher")),
    ("sleep", _topic(r"sleep\w*", r"insomnia", r"tired", r"exhausted", r"nightmares?")),
    ("loneliness", _topic(r"lonely", r"loneliness", r"alone", r"isolated", r"no friends")),
    ("stress and anxiety", _topic(r"anxious", r"anxiety", r"stress\w*", r"panic\w*", r"worried", r"overwhelm\w*",
                                  r"nervous")),
    ("low mood", _topic(r"sad", r"depress\w*", r"hopeless", r"empty", r"numb", r"crying", r"cried", r"miserable")),
    ("friends", _topic(r"friends?", r"friendship")),
    ("hobbies", _topic(r"paint\w*", r"music", r"guitar", r"piano", r"hik\w*", r"running", r"reading", r"books?",
                       r"garden\w*", r"pottery", r"games?", r"cook\w*", r"bak\w*", r"art")),
]


@lru_cache(maxsize=1)
def _vader() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def mood_of(text: str) -> float:
    return float(_vader().polarity_scores(text)["compound"])


def topics_of(text: str) -> list[str]:
    return [label for label, pattern in TOPICS if pattern.search(text)]


def message_signals(
    messages: list[Message], entity_ids: dict[str, list[str]], flagged: Callable[[str], bool]
) -> list[MessageSignal]:
    """One signal per user message with text; ``entity_ids`` maps a message id to the entities
    its memories mention."""
    return [
        MessageSignal(
            message_id=m.id,
            session_id=m.session_id,
            created_at=m.created_at,
            mood=round(mood_of(m.content), 4),
            topics=[*topics_of(m.content), *(ENTITY_TOPIC + e for e in entity_ids.get(m.id, []))],
            flagged=flagged(m.content),
        )
        for m in messages
        if m.role == "user" and m.content.strip()
    ]


@dataclass
class SessionPoint:
    session_id: str
    started_at: datetime
    messages: int
    mood: float
    topics: list[tuple[str, int]]  # label, messages; most frequent first
    flagged: int

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "started_at": self.started_at.isoformat(),
            "messages": self.messages,
            "mood": round(self.mood, 4),
            "topics": [{"label": label, "messages": n} for label, n in self.topics],
            "flagged_messages": self.flagged,
        }


@dataclass
class Theme:
    label: str
    sessions: int


@dataclass
class Arc:
    sessions: list[SessionPoint] = field(default_factory=list)
    mood_trend: str = "unknown"  # falling | rising | stable | unknown (fewer than MIN_SESSIONS)
    slope: float = 0.0
    sessions_considered: int = 0
    run: int = 0  # the last sessions each lower (falling) or higher (rising) than the one before
    statement: str = ""
    recurring_themes: list[Theme] = field(default_factory=list)
    crisis_adjacent: list[str] = field(default_factory=list)

    @property
    def significant(self) -> bool:
        return self.mood_trend in {"falling", "rising"} or bool(self.crisis_adjacent)

    def summary_json(self) -> dict[str, Any]:
        """The arc as recall returns it."""
        return {
            "mood_trend": self.mood_trend,
            "sessions_considered": self.sessions_considered,
            "recurring_themes": [{"label": t.label, "sessions": t.sessions} for t in self.recurring_themes],
            "slope": round(self.slope, 4),
            "statement": self.statement,
            "crisis_adjacent": self.crisis_adjacent,
            "significant": self.significant,
        }


def compute_arc(signals: list[MessageSignal], entities: list[Entity], at: datetime | None = None) -> Arc:
    return arc_of(session_tallies([s for s in signals if at is None or s.created_at <= at]), entities)


@dataclass(frozen=True)
class SessionTally:
    """What one session's signals add up to, before entity ids become theme labels: kept by
    the person model so that a new signal updates its session's tally instead of every
    session being counted again (the arc is read on every turn; its signals only grow)."""

    started_at: datetime
    moods: tuple[float, ...]  # in signal order, so a tally added to and one built at once agree to the bit
    topics: Counter[str]  # raw topic -> messages naming it (each topic once per message)
    flagged: int

    def adding(self, rows: list[MessageSignal]) -> SessionTally:
        topics = self.topics.copy()
        for row in rows:
            topics.update(list(dict.fromkeys(row.topics)))  # each topic once per message
        return SessionTally(
            min(self.started_at, *(r.created_at for r in rows)),
            self.moods + tuple(r.mood for r in rows),
            topics,
            self.flagged + sum(r.flagged for r in rows),
        )

    def point(self, session_id: str, labels: dict[str, str]) -> SessionPoint:
        topics: Counter[str] = Counter()
        for topic, messages in self.topics.items():
            if topic.startswith(ENTITY_TOPIC) and topic not in labels:
                continue  # an entity since erased
            topics[labels.get(topic, topic)] += messages
        return SessionPoint(
            session_id=session_id,
            started_at=self.started_at,
            messages=len(self.moods),
            mood=float(np.mean(self.moods)),
            topics=sorted(topics.items(), key=lambda kv: (-kv[1], kv[0])),
            flagged=self.flagged,
        )


def session_tallies(
    signals: list[MessageSignal], tallies: dict[str, SessionTally] | None = None
) -> dict[str, SessionTally]:
    """``tallies`` (not changed) with ``signals`` added, by session; from nothing when None."""
    by_session: dict[str, list[MessageSignal]] = {}
    for signal in signals:
        by_session.setdefault(signal.session_id, []).append(signal)
    tallies = dict(tallies or {})
    for session_id, rows in by_session.items():
        known = tallies.get(session_id)
        tallies[session_id] = known.adding(rows) if known else SessionTally(rows[0].created_at, (), Counter(), 0).adding(rows)
    return tallies


def arc_of(tallies: dict[str, SessionTally], entities: list[Entity]) -> Arc:
    labels = {ENTITY_TOPIC + e.id: theme_label(e) for e in entities}
    points = sorted((tally.point(sid, labels) for sid, tally in tallies.items()), key=lambda p: p.started_at)
    arc = Arc(sessions=points)
    if not points:
        return arc
    _trend(arc, points[-WINDOW:])
    counts = Counter(label for p in points for label in {label for label, _ in p.topics})
    arc.recurring_themes = [
        Theme(label, n) for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= RECURRING_AT
    ][:MAX_THEMES]
    arc.crisis_adjacent = _newly_crisis_adjacent(points)
    return arc


def _trend(arc: Arc, window: list[SessionPoint]) -> None:
    arc.sessions_considered = len(window)
    if len(window) < MIN_SESSIONS:
        arc.mood_trend = "unknown"
        arc.statement = f"too few sessions for a mood trend ({len(window)} of {MIN_SESSIONS})"
        return
    moods = np.array([p.mood for p in window])
    arc.slope = float(np.polyfit(np.arange(len(moods)), moods, 1)[0])
    falling = _run(moods, -1)
    rising = _run(moods, +1)
    if falling >= 2 or arc.slope <= -SLOPE:
        arc.mood_trend, arc.run = "falling", falling
    elif rising >= 2 or arc.slope >= SLOPE:
        arc.mood_trend, arc.run = "rising", rising
    else:
        arc.mood_trend = "stable"
    span = f"(mood {moods[-1 - max(arc.run, 1)]:+.2f} -> {moods[-1]:+.2f})"
    if arc.mood_trend == "falling" and arc.run >= 2:
        arc.statement = f"mood has fallen over the last {arc.run + 1} sessions, each lower than the one before {span}"
    elif arc.mood_trend == "rising" and arc.run >= 2:
        arc.statement = f"mood has risen over the last {arc.run + 1} sessions, each higher than the one before {span}"
    elif arc.mood_trend in {"falling", "rising"}:
        arc.statement = f"mood has been {arc.mood_trend} over the last {len(window)} sessions ({arc.slope:+.2f} per session)"
    else:
        arc.statement = f"mood has been steady over the last {len(window)} sessions"


def _run(moods: np.ndarray, direction: int) -> int:
    """How many of the last sessions were each lower (-1) or higher (+1) than the one before."""
    run = 0
    for later, earlier in zip(moods[::-1], moods[-2::-1]):
        if direction * (later - earlier) >= STEP:
            run += 1
        else:
            break
    return run


def _newly_crisis_adjacent(points: list[SessionPoint]) -> list[str]:
    latest = points[-1]
    if not latest.flagged:
        return []
    before = {label for p in points[:-1] if p.flagged for label, _ in p.topics}
    return [label for label, _ in latest.topics if label not in before]


def render_arc_note(arc: Arc, themes: int = 2) -> str:
    """A few lines for the memory block; the labels are salience's or entity names (letters only)."""
    parts = [f"Across sessions: {arc.statement}." if arc.mood_trend in {"falling", "rising"} else ""]
    if arc.crisis_adjacent:
        parts.append("Newly close to a crisis disclosure: " + ", ".join(arc.crisis_adjacent[:3]) + ".")
    if themes and arc.recurring_themes:
        parts.append(
            "Recurring: " + "; ".join(f"{t.label} ({t.sessions} sessions)" for t in arc.recurring_themes[:themes]) + "."
        )
    return " ".join(p for p in parts if p)
