"""How much a memory matters, in [0, 1].

A first, deliberately simple scale keyed on the kind of memory and a few load-bearing
topics; the salience engine replaces it with a calibrated scorer. Kept as a pure
function so that replacement touches nothing else.
"""

from __future__ import annotations

import re

BASE_BY_KIND = {
    "safety": 1.0,
    "relationship": 0.6,
    "fear": 0.6,
    "goal": 0.55,
    "event": 0.5,
    "fact": 0.4,
    "preference": 0.35,
}

LOAD_BEARING = re.compile(
    r"\b(diagnos\w*|cancer|illness|hospital|died|death|passed away|funeral|grief|divorce|"
    r"broke up|pregnan\w*|lost my job|laid off|fired|debt|abuse\w*|surgery|therapy)\b",
    re.IGNORECASE,
)


def estimate_importance(text: str, kind: str) -> float:
    score = BASE_BY_KIND.get(kind, 0.4)
    if LOAD_BEARING.search(text):
        score = max(score, 0.85)
    return score
