"""Whom a memory is about, among the people speaking in a user's transcripts.

A sentence is about its speaker unless it speaks only to someone else: "Great that you're
prioritizing self-care" or "That charity race sounds great, Mel!", said by Caroline, tells about
Melanie, not about Caroline. A person named in the text is its subject too, except when the name
only calls them ("Hey Caroline, I ran a race" is about the speaker).

    about(memory, X) =  X named in the text, not as the one spoken to
                     or X is the speaker, and the sentence speaks in the first person or to nobody
                     or the sentence speaks to X: in the second person or as a reaction
                        (sympathy, praise, wishes), to the one it calls by name, else to the
                        other speakers; or calling X by name and not speaking of oneself

With no other speaker known (a companion app, where "you" is the AI), every sentence is about
its speaker.

A name calls someone when it stands apart in a greeting or between commas ("Hey Caroline,",
"Thanks, Caroline!", "... great, Mel!"); a short form counts for the full name it begins
("Mel" for Melanie). Rules of English only: nothing here is tuned to a data set.
"""

from __future__ import annotations

import re
from functools import lru_cache

FIRST_PERSON = frozenset({"i", "i'm", "i've", "i'd", "i'll", "im", "me", "my", "mine", "myself", "we", "we're",
                          "we've", "our", "ours", "us"})
SECOND_PERSON = frozenset({"you", "you're", "you've", "you'd", "you'll", "your", "yours", "yourself", "ya"})
WORDS = re.compile(r"[a-z']+")
# Sympathy, praise and wishes speak to someone about their life ("Oops, sorry 'bout the
# accident!", "must have been tough", "sounds great", "proud of"), with or without a "you".
REACTION = re.compile(
    r"\b(sorry|congrat\w*|must (have been|be)|sounds? (so |really )?(great|awesome|amazing|fun|lovely|like|cool|"
    r"tough|hard|scary)|can'?t wait to (see|hear)|glad (to hear|that|you)|proud of|good for|good luck|happy for|"
    r"that'?s (so )?(great|awesome|amazing|cool|tough|rough)|what a)\b",
    re.IGNORECASE,
)
GREETING = r"(?:hey|hi|hello|hiya|thanks|thank you|congrats|congratulations|oh|wow|yeah|yes|yep|no|sorry|aw+|dear|good morning|good night|bye)"


@lru_cache(maxsize=4096)
def _calling(name: str) -> re.Pattern[str]:
    """``name`` (or a short form of it, three letters or more) standing apart as a call."""
    short = "|".join(re.escape(name[:n]) for n in range(len(name), 2, -1))
    return re.compile(
        rf"(?:^\W*|\b{GREETING}[\s,!]+|,\s*)(?:{short})\b(?=\s*(?:[,!.?;:)\-–—]|$))", re.I
    )


@lru_cache(maxsize=4096)
def _naming(name: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(name)}\b")


def called(text: str, speakers: frozenset[str]) -> set[str]:
    """The speakers ``text`` calls by name."""
    lowered = text.lower()
    return {
        name for name in speakers
        if len(name) >= 3 and name[:3].lower() in lowered and _calling(name).search(text)
    }


def named(text: str, name: str) -> bool:
    """``text`` names ``name`` other than to call them."""
    if name not in text or not _naming(name).search(text):
        return False
    return bool(_naming(name).search(_calling(name).sub(" ", text)))


def is_about(text: str, speaker: str, name: str, speakers: frozenset[str]) -> bool:
    """Whether a memory said by ``speaker`` is about ``name`` (one of ``speakers``)."""
    if named(text, name):
        return True
    others = speakers - {speaker}
    calls = called(text, others)
    words = set(WORDS.findall(text.lower().replace("\u2019", "'")))
    first = not FIRST_PERSON.isdisjoint(words)
    second = bool(others) and (not SECOND_PERSON.isdisjoint(words) or bool(REACTION.search(text)))
    if name == speaker:
        return first or not (second or calls)
    # "Hey Caroline, I ran a race": a call alone, in a sentence about oneself, is a greeting
    return (second or (bool(calls) and not first)) and name in (calls or others)


def subjects(text: str, speaker: str, speakers: frozenset[str]) -> frozenset[str]:
    """Every one of ``speakers`` a memory said by ``speaker`` is about."""
    if speakers <= {speaker}:  # nobody else speaks: about its speaker only
        return frozenset({speaker})
    return frozenset(name for name in speakers if is_about(text, speaker, name, speakers))
