"""Crisis detection on one user message: the ``SafetyDetector`` protocol and the offline detector.

The offline detector is rules over normalised text (the tables live in ``rules.py``):

    normalise -> drop figures of speech and quoted speech -> split into clauses
    -> match each rule -> drop negated, third-person and fictional matches
    -> adjust severity (distant past, laughter, plan/means/timeline) -> one flag per category

It runs in well under a millisecond per message, needs no model and no network, and
errs towards flagging: a companion that gently checks in once too often does less harm
than one that misses a disclosure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from salience.safety.rules import (
    ANSWERED_NO,
    ASKED,
    DISTANT_PAST,
    ESCALATES_WITH_PLAN,
    FIRST_PERSON,
    IDIOMS,
    INNER_NEGATOR,
    LAUGHTER,
    LONG_OVER,
    MEDIA,
    NEGATING_LEAD,
    NEGATING_TAIL,
    NEGATION_RELEASERS,
    NEGATORS,
    PLAN_MEANS_TIMELINE,
    PRESENT_AGAIN,
    RECOVERED,
    RULES,
    SCOPE_BREAKERS,
    SEVERITIES,
    SHORTHAND,
    STILL_PULLED,
    THIRD_PERSON,
    Category,
    Rule,
    Severity,
)

SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}
SEVERITY_SCORE: dict[str, float] = {"concern": 0.6, "risk": 0.8, "imminent": 0.95}
NEGATION_WINDOW = 6  # tokens before a match that a negator may sit in
MAX_EVIDENCE = 120

QUOTED = re.compile(r'"[^"]{1,400}"')
OWN_QUOTE = re.compile(r"\b(?:i|i've|i'd) (?:said|told \w+|wrote|texted|typed|say|keep saying)[:,]? ?$")
AFTER_AN_ATTEMPT = re.compile(r"\b(?:tried|attempted|trying) to $")
CLAUSE_SPLIT = re.compile(r"[.!?;\n]+|,|\s(?:but|though|however|although)\s")
TOKEN = re.compile(r"[a-z']+")
TOPIC = re.compile(
    r"\b(?:learn(?:ed|ing|t)?|taught|read|heard|lesson|lecture|essay|article|video|class|assignment|research|"
    r"dissertation|thesis|project|paper|module|course|presentation|report|talk|training) "
    r"(?:about|on) (?:\w+ )?$"
)


@dataclass(frozen=True)
class Flag:
    category: Category
    severity: Severity
    score: float
    evidence: str

    def as_json(self) -> dict[str, object]:
        return {"category": self.category, "severity": self.severity, "score": self.score, "evidence": self.evidence}


class SafetyDetector(Protocol):
    """Reads one user message and returns its flags (empty: nothing of concern)."""

    async def detect(self, text: str) -> list[Flag]: ...


def higher(a: Severity, b: Severity) -> Severity:
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b


def at_least(severity: str, threshold: str) -> bool:
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[threshold]


def strongest_first(flags: list[Flag]) -> list[Flag]:
    return sorted(flags, key=lambda f: (-SEVERITY_RANK[f.severity], -f.score, f.category))


class RuleBasedDetector:
    """The rules: pattern tables, no model, no network. ``HybridDetector`` (hybrid.py) combines
    them with the learned classifier; alone, they are the fallback without the embedding model."""

    async def detect(self, text: str) -> list[Flag]:
        return self.detect_sync(text)

    def detect_sync(self, text: str) -> list[Flag]:
        return self.read(text).flags

    def read(self, text: str) -> "Reading":
        """The flags, and whether the message said something crisis-like that the rules set
        aside (a negation, someone else, a story, an idiom, others' quoted words)."""
        normalised = normalise(text)
        if not normalised:
            return Reading([], set_aside=False)
        cleaned = without_quoted_speech(without_idioms(normalised))
        set_aside = cleaned != normalised
        laughing = bool(LAUGHTER.search(normalised))
        distant = bool(DISTANT_PAST.search(cleaned)) and not PRESENT_AGAIN.search(cleaned)
        # The speaker's crisis is history (recovery in so many words, nothing pulling now), or
        # a screening question was asked and answered no: what the rules read is not happening.
        over = bool(RECOVERED.search(cleaned)) and not PRESENT_AGAIN.search(cleaned) and not STILL_PULLED.search(cleaned)
        answered_no = bool(ASKED.search(cleaned) and ANSWERED_NO.search(cleaned))
        planning = bool(PLAN_MEANS_TIMELINE.search(cleaned))

        # One line per clause: no pattern's "." crosses a line, so every rule runs once over
        # the whole text (fast) and still never matches across clauses (correct).
        lines = "\n".join(c.strip() for c in CLAUSE_SPLIT.split(cleaned))
        best: dict[Category, Flag] = {}
        for rule in RULES:
            if rule.probe is not None and not rule.probe.search(lines):
                continue
            for match in rule.pattern.finditer(lines):
                prefix = lines[lines.rfind("\n", 0, match.start()) + 1 : match.start()]
                if "\n" in match.group(0):
                    continue  # a pattern spanning two clauses (through a literal space class)
                line_end = lines.find("\n", match.end())
                suffix = lines[match.end() : len(lines) if line_end < 0 else line_end]
                past = rule.past_act or bool(AFTER_AN_ATTEMPT.search(prefix))
                # Recovery talk or a screening question answered no: nothing is happening. (A past
                # act with a distance marker stays: the speaker's own history, at concern.)
                settled = over and (past or "used to" in prefix) and not (past and distant) or answered_no
                if (is_negated(prefix) or is_fiction(prefix) or NEGATING_TAIL.search(suffix)
                        or negated_inside(rule, match.group(0)) or (settled and rule.severity != "imminent")):
                    set_aside = True
                    continue
                if rule.needs_first_person and not speaker_is_subject(prefix):
                    set_aside = True
                    continue
                if rule.category == "medical_emergency" and not speaker_is_subject(prefix) \
                        and LONG_OVER.search(prefix + match.group(0) + suffix):
                    set_aside = True  # someone else's emergency, long over
                    continue
                severity = adjusted_severity(rule, past, distant=distant, laughing=laughing, planning=planning)
                flag = Flag(rule.category, severity, SEVERITY_SCORE[severity], match.group(0)[:MAX_EVIDENCE])
                current = best.get(rule.category)
                if current is None or SEVERITY_RANK[severity] > SEVERITY_RANK[current.severity]:
                    best[rule.category] = flag
        return Reading(strongest_first(list(best.values())), set_aside)


@dataclass(frozen=True)
class Reading:
    flags: list[Flag]
    set_aside: bool  # a crisis phrase was read and deliberately not flagged


def normalise(text: str) -> str:
    text = text.lower()
    for pattern, replacement in SHORTHAND:
        text = pattern.sub(replacement, text)
    return text.strip()


def without_idioms(text: str) -> str:
    for probe, idiom in IDIOMS:
        if probe.search(text):
            text = idiom.sub(" ~ ", text)
    return text


def without_quoted_speech(text: str) -> str:
    """Drop what others said or sang ("the song goes '...'"), keep what the speaker says they said."""

    def replace(match: re.Match[str]) -> str:
        return match.group(0) if OWN_QUOTE.search(text[: match.start()]) else " ~ "

    return QUOTED.sub(replace, text)


def is_negated(prefix: str) -> bool:
    """A negator shortly before the match, with nothing in between that ends its scope."""
    if NEGATING_LEAD.search(prefix):
        return True  # "not that i'd ever...", "no way i'd..."
    tokens = TOKEN.findall(prefix)[-NEGATION_WINDOW:]
    for position in range(len(tokens) - 1, -1, -1):
        token = tokens[position]
        if token in NEGATORS:
            following = tokens[position + 1] if position + 1 < len(tokens) else ""
            return following not in NEGATION_RELEASERS
        if token in SCOPE_BREAKERS:
            return False
    return False


def negated_inside(rule: Rule, matched: str) -> bool:
    """A negator the pattern did not spell, inside its match: "my partner has never threatened me"
    (patterns whose negation is the disclosure, "don't want to be alive", spell theirs)."""
    found = INNER_NEGATOR.search(matched)
    return bool(found) and found.group(0) not in rule.pattern.pattern


def is_fiction(prefix: str) -> bool:
    """A story or a topic ("in the movie...", "we learned about..."), not the speaker's life."""
    return bool(MEDIA.search(prefix) or TOPIC.search(prefix))


def speaker_is_subject(prefix: str) -> bool:
    """The nearest person named before the match is the speaker (or nobody: chat drops "I")."""
    for token in reversed(TOKEN.findall(prefix)):
        if token in FIRST_PERSON:
            return True
        if token in THIRD_PERSON or token.endswith("'s") and token not in {"it's", "that's", "what's", "there's", "let's"}:
            return False
    return True


def adjusted_severity(rule: Rule, past: bool, *, distant: bool, laughing: bool, planning: bool) -> Severity:
    if past and distant:
        return "concern"  # one's own history: worth remembering gently, not an emergency
    if rule.hyperbole_prone and laughing:
        return "concern"  # probably a joke; still remembered, never escalated at the default threshold
    if planning and rule.category in ESCALATES_WITH_PLAN:
        return "imminent"
    return rule.severity
