"""Relative dates, resolved against the time a message was said.

"I went to the support group yesterday", said on 8 May 2023, is remembered as
"... yesterday (7 May 2023)": a memory read months later must still say when.
Only common, unambiguous phrases are resolved; anything else is left as said.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "a few": 3, "few": 3, "couple of": 2}
NUMBER = r"(\d+|a couple of|a few|couple of|few|an?|one|two|three|four|five|six|seven|eight|nine|ten)"

PHRASES = re.compile(
    r"\b(yesterday|today|tonight|last night|this morning|tomorrow|"
    r"(?:last|this|next|past) (?:week|weekend|month|year|summer|winter|spring|fall|autumn)|"
    r"(?:last|this|next) (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)|"
    + NUMBER + r" (?:days?|weeks?|months?|years?) ago)\b",
    re.IGNORECASE,
)


def day(value: datetime) -> str:
    return f"{value.day} {value:%B %Y}"


def month(value: datetime) -> str:
    return f"{value:%B %Y}"


def shift_months(value: datetime, months: int) -> datetime:
    index = value.year * 12 + value.month - 1 + months
    return value.replace(year=index // 12, month=index % 12 + 1, day=1)


def resolve(phrase: str, said_at: datetime) -> str | None:
    """The calendar meaning of one relative phrase, or None when it has none we trust."""
    p = phrase.lower()
    if p in {"today", "tonight", "this morning"}:
        return day(said_at)
    if p in {"yesterday", "last night"}:
        return day(said_at - timedelta(days=1))
    if p == "tomorrow":
        return day(said_at + timedelta(days=1))
    if p.endswith(" ago"):
        count_text, unit = p[: -len(" ago")].rsplit(" ", 1)
        count = int(count_text) if count_text.isdigit() else NUMBERS.get(count_text, 0)
        if not count:
            return None
        if unit.startswith("day"):
            return day(said_at - timedelta(days=count))
        if unit.startswith("week"):
            return f"the week of {day(said_at - timedelta(weeks=count))}"
        if unit.startswith("month"):
            return month(shift_months(said_at, -count))
        return str(said_at.year - count)
    which, unit = p.split(" ", 1)
    step = {"last": -1, "past": -1, "this": 0, "next": 1}[which]
    if unit in WEEKDAYS:
        delta = WEEKDAYS.index(unit) - said_at.weekday()
        if step < 0:
            delta = delta - 7 if delta >= 0 else delta
        elif step > 0:
            delta = delta + 7 if delta <= 0 else delta
        return day(said_at + timedelta(days=delta))
    if unit in {"week", "weekend"}:
        return f"the {unit} of {day(said_at + timedelta(weeks=step))}"
    if unit == "month":
        return month(shift_months(said_at, step))
    if unit == "year":
        return str(said_at.year + step)
    return f"{unit} {said_at.year + step}"


def resolve_relative_dates(text: str, said_at: datetime) -> str:
    """``text`` with each resolvable relative date followed by its date in parentheses."""

    def annotate(match: re.Match[str]) -> str:
        meaning = resolve(match.group(0), said_at)
        return f"{match.group(0)} ({meaning})" if meaning else match.group(0)

    return PHRASES.sub(annotate, text)
