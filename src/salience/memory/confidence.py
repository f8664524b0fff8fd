"""Confidence: how sure recall is that it found what the turn is about, and honesty when not.

Two cases, each a logistic function of one margin, with ``found`` at confidence 0.5:

- The turn names a person recall knows as a speaker ("What did Caroline realize after her
  race?"): the margin is the best relevance among memories about that person (whom a memory is
  about: ``subject.py``) minus the best among memories about someone else, plus half the same
  margin between the means of the three best of each. Asked about something that happened to
  another person, the margin turns negative, and recall says it did not find it (``found``
  false; the memories go under a note saying they may be about someone else).
- Otherwise: the best dense similarity between the turn and any memory.

The constants were set once on LoCoMo (answerable questions against its adversarial ones,
which ask about things that never happened to the person named; see bench/locomo/README.md)
and are the same for every user and question.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

NAMED_MIDPOINT = -0.07
TOP_MATCHES = 3  # the named margin also compares the means of this many best matches on each side
TOP_WEIGHT = 0.5
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


def named_confidence(about: Sequence[float], other: Sequence[float]) -> float:
    """From the best relevances (best first, at most ``TOP_MATCHES``) among memories about the
    person named and among the others; an empty side counts as 0."""
    def best(values: Sequence[float]) -> float:
        return float(values[0]) if len(values) else 0.0

    def mean(values: Sequence[float]) -> float:
        return float(sum(values[:TOP_MATCHES])) / len(values[:TOP_MATCHES]) if len(values) else 0.0

    margin = best(about) - best(other) + TOP_WEIGHT * (mean(about) - mean(other))
    return _logistic(margin, NAMED_MIDPOINT, NAMED_SLOPE)


def unnamed_confidence(best_similarity: float) -> float:
    return _logistic(best_similarity, UNNAMED_MIDPOINT, UNNAMED_SLOPE)
