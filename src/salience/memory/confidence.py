"""Confidence: how sure recall is that it found what the turn is about, and honesty when not.

Two cases, each a logistic function of one margin, with ``found`` at confidence 0.5:

- The turn names a person recall knows as a speaker ("What did Caroline realize after her
  race?"): the margin is the best relevance among memories about that person minus the best
  among memories about someone else. Asked about something that happened to another person,
  the margin turns negative, and recall says it found nothing rather than offering the other
  person's memory as theirs.
- Otherwise: the best dense similarity between the turn and any memory.

The constants were set once on LoCoMo (answerable questions against its adversarial ones,
which ask about things that never happened to the person named; see bench/locomo/README.md)
and are the same for every user and question.
"""

from __future__ import annotations

import math
import re

NAMED_MIDPOINT = -0.06
NAMED_SLOPE = 12.0
UNNAMED_MIDPOINT = 0.25
UNNAMED_SLOPE = 12.0
FOUND_AT = 0.5

REFERS_TO_PAST = re.compile(
    r"\b(remember|recall|like i said|as i said|as i mentioned|i mentioned|i told you|told you about|"
    r"we talked about|we discussed|we spoke about|last time|the other day|you said|you told me|"
    r"did i (ever )?(tell|mention)|have i (ever )?(told|mentioned))\b",
    re.IGNORECASE,
)


def refers_to_past(text: str) -> bool:
    """Does the turn point back at an earlier conversation ("remember when I told you...")?"""
    return bool(REFERS_TO_PAST.search(text))


def _logistic(x: float, midpoint: float, slope: float) -> float:
    return 1.0 / (1.0 + math.exp(-slope * (x - midpoint)))


def named_confidence(best_about: float, best_other: float) -> float:
    return _logistic(best_about - best_other, NAMED_MIDPOINT, NAMED_SLOPE)


def unnamed_confidence(best_similarity: float) -> float:
    return _logistic(best_similarity, UNNAMED_MIDPOINT, UNNAMED_SLOPE)
