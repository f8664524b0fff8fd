"""How much a memory matters, in [0, 1], offline.

The scale (examples score as shown by the tests):

    1.0   crisis and safety: suicidal thoughts, self-harm, abuse
    0.9   death and grief: "my dad passed away in March"
    0.85  health: "my sister was just diagnosed with breast cancer"
    0.7   family, relationships, identity: "we're adopting a child", "I'm transgender"
    0.65  work and money: "I lost my job", "we're behind on rent"
    0.6   goals and fears: "I want to become a counselor", "I'm scared of flying"
    0.35  everyday facts and plans without a load-bearing topic
    0.15  incidental detail: breakfast, the weather, small talk

A sentence takes the weight of the heaviest topic it touches, then gains a little for
speaking about oneself (self-disclosure) and for emotional intensity (VADER's compound
score), so "I'm terrified about the biopsy" outranks "the biopsy is on Tuesday".
"""

from __future__ import annotations

import re
from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


def _topic(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(words) + r")\b", re.IGNORECASE)


TOPICS: list[tuple[float, re.Pattern[str]]] = [
    (1.0, _topic(r"suicid\w*", r"kill (my|him|her)self", r"self[- ]harm\w*", r"cut(ting)? myself", r"overdos\w*",
                 r"abus\w*", r"assault\w*", r"rap(e|ed)", r"hits? me", r"beat(s|ing)? me")),
    (0.9, _topic(r"died", r"dies", r"death", r"dead", r"passed away", r"funeral", r"grie\w*", r"mourn\w*",
                 r"widow\w*", r"miscarriage", r"lost my (mom|mum|mother|dad|father|wife|husband|son|daughter|baby)")),
    (0.85, _topic(r"diagnos\w*", r"cancer", r"tumou?r", r"chemo\w*", r"hospital\w*", r"surgery", r"illness",
                  r"disease", r"disorder", r"depress\w*", r"anxiety", r"panic attacks?", r"therap(y|ist)",
                  r"medication", r"pregnan\w*", r"injur\w*", r"accident", r"addict\w*", r"relapse\w*")),
    (0.7, _topic(r"sister", r"brother", r"mom", r"mum", r"mother", r"dad", r"father", r"parents?", r"wife",
                 r"husband", r"partner", r"boyfriend", r"girlfriend", r"son", r"daughter", r"kids?", r"children",
                 r"married", r"marriage", r"wedding", r"divorc\w*", r"broke up", r"break-?up", r"dating",
                 r"adopt\w*", r"grand\w+", r"family", r"transgender", r"trans", r"gay", r"lesbian", r"queer",
                 r"identity", r"religio\w*", r"faith")),
    (0.65, _topic(r"jobs?", r"fired", r"laid off", r"layoffs?", r"unemploy\w*", r"promot\w*", r"career",
                  r"debt", r"rent", r"mortgage", r"bills", r"money", r"broke", r"evict\w*", r"salary",
                  r"business", r"graduat\w*", r"degree", r"school", r"college", r"moved", r"moving")),
    (0.6, _topic(r"goals?", r"dream", r"hope to", r"plan(ning)? to", r"want to become", r"afraid", r"scared",
                 r"terrified", r"fear\w*", r"worried", r"anxious", r"dread")),
]
INCIDENTAL = _topic(r"breakfast", r"lunch", r"dinner", r"coffee", r"tea", r"weather", r"rain\w*", r"sunny",
                    r"snack", r"tv", r"traffic", r"commute", r"groceries")
SELF_DISCLOSURE = _topic(r"i", r"i'm", r"i've", r"i'd", r"my", r"me", r"myself", r"we", r"our")
EVERYDAY = 0.35
INCIDENTAL_ONLY = 0.15


@lru_cache(maxsize=1)
def _sentiment() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def emotional_intensity(text: str) -> float:
    """0 for neutral, towards 1 for strongly felt (either way)."""
    return abs(_sentiment().polarity_scores(text)["compound"])


def estimate_importance(text: str, kind: str = "fact") -> float:
    weights = [weight for weight, pattern in TOPICS if pattern.search(text)]
    if kind == "safety":
        weights.append(1.0)
    if weights:
        base = max(weights)
    elif INCIDENTAL.search(text):
        return INCIDENTAL_ONLY
    else:
        base = EVERYDAY
    bonus = 0.05 * bool(SELF_DISCLOSURE.search(text)) + 0.1 * emotional_intensity(text)
    return round(min(1.0, base + bonus), 4)
