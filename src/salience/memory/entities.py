"""Entity resolution: the people, pets, places, organisations and conditions a user talks about,
as one node each across sessions.

Offline, from the memory text alone:

    mentions    "my sister", "my sis", "my sister Sarah", "Sarah, my sister", "Sarah", "Sarah's",
                "my dog Biscuit", "diagnosed with breast cancer", "moved to Boston", "work at Acme"
    resolution  a mention joins an existing entity when the evidence supports it, else starts one:

        relation + name   the entity with that relation and a matching name; else the one with
                          that relation and no name yet (it gets the name); else the one with
                          that name and no relation yet (it gets the relation); else a new one.
                          "my friend Sarah" never joins "my sister Sarah": the relations differ.
        relation only     the entity with that relation seen most recently ("my sis" -> sister)
        name only         the entity whose name or alias matches (rapidfuzz ratio >= 88, or a
                          nickname that starts the name: "Mel" -> "Melanie"); of several, the
                          one seen most recently
        other types       a fuzzy match on the name within the type

Names are matched with rapidfuzz, so "Sara" and "Sarah" meet. What "my" refers to follows the
speaker: "my sister" said by the other named speaker of an imported transcript is their sister
(relation "sister of Melanie"), not the user's.

Two entities that were started apart (a "Sarah" first, a "my sister" later, never said together)
are not merged afterwards: the first "my sister Sarah" gives the name to the unnamed sister,
and the earlier "Sarah" entity stays on its own. Ids are derived from the first mention, so
processing the same history again gives the same entities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from rapidfuzz import fuzz

from salience.model import Entity, EntityType, UserRef, stable_id

# surface word -> (canonical relation, type)
RELATIONS: dict[str, tuple[str, EntityType]] = {
    **{w: ("sister", "person") for w in ("sister", "sis")},
    **{w: ("brother", "person") for w in ("brother", "bro")},
    **{w: ("mother", "person") for w in ("mother", "mom", "mum", "mommy", "mama")},
    **{w: ("father", "person") for w in ("father", "dad", "daddy", "papa")},
    **{w: ("grandmother", "person") for w in ("grandmother", "grandma", "granny", "nana")},
    **{w: ("grandfather", "person") for w in ("grandfather", "grandpa")},
    **{w: ("children", "person") for w in ("kids", "children")},
    **{w: (w, "person") for w in (
        "wife", "husband", "partner", "boyfriend", "girlfriend", "fiance", "fiancee", "ex", "son", "daughter",
        "aunt", "uncle", "cousin", "niece", "nephew", "friend", "roommate", "boss", "manager", "coworker",
        "colleague", "therapist", "doctor", "teacher", "mentor", "neighbor", "neighbour", "stepmom", "stepdad",
    )},
    **{w: (w, "pet") for w in ("dog", "cat", "puppy", "kitten", "horse", "rabbit", "bunny", "parrot", "hamster")},
}
MODIFIERS = r"(?:(?:best|older|younger|big|little|baby|twin|new|old|late|ex-)\s*)?"
RELATION_WORDS = "|".join(sorted(RELATIONS, key=len, reverse=True))
NAME = r"[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?"
FULL_NAME = rf"{NAME}(?:\s{NAME})?"
# "my sister Sarah", "my sister, Sarah, ..." (an appositive closes with a comma, "and" or the
# end), but not "my kids, Seeing them ..."
# The LLM extractor writes about the user in the third person: "the user's sister" is "my sister".
DETERMINER = r"(?P<det>[Mm]y|[Oo]ur|[Tt]he user's)"
RELATION_THEN_NAME = re.compile(
    rf"\b{DETERMINER}\s+{MODIFIERS}(?P<rel>{RELATION_WORDS})\b"
    rf"(?:\s+(?:named\s+|called\s+)?(?P<name>{FULL_NAME})|,\s*(?P<apposed>{FULL_NAME})(?=\s*(?:,|\band\b|[.!?)]|$)))?"
)
NAMED = re.compile(rf"\b(?:a|an|another|one)\s+(?P<rel>{RELATION_WORDS})\s+(?:named|called)\s+(?P<name>{NAME})\b")
NAME_THEN_RELATION = re.compile(
    rf"\b(?P<name>{FULL_NAME})(?:,?\s+\(?|\s+is\s+)(?P<det>my|our|the user's)\s+{MODIFIERS}(?P<rel>{RELATION_WORDS})\b"
)
CAPITALISED = re.compile(rf"\b{FULL_NAME}\b(?:'s)?")
PLACE_BEFORE = re.compile(r"\b(in|to|from|near|visit(?:ed|ing)?|moved to|trip to|lives? in)\s+$", re.I)
ORGANISATION_BEFORE = re.compile(r"\b(work(?:s|ed|ing)?|job|intern(?:ing|ship)?|employed|hired)\s+(?:at|for|by)\s+$", re.I)
CONDITIONS = re.compile(
    r"\b((?:breast |lung |skin |prostate |colon |pancreatic |brain )?cancer|leukemia|lymphoma|diabetes|"
    r"depression|anxiety disorder|bipolar(?: disorder)?|ptsd|adhd|autism|dementia|alzheimer'?s|parkinson'?s|"
    r"multiple sclerosis|lupus|asthma|arthritis|epilepsy|ocd|insomnia|migraines?|long covid|covid|"
    r"eating disorder|anorexia|bulimia|schizophrenia|endometriosis|tumou?r|stroke|heart disease)\b",
    re.I,
)
# Capitalised words that are not names: the pronoun, calendar words, titles, languages, exclamations.
NOT_NAMES = {
    "I", "I'm", "I've", "I'd", "I'll", "Im", "Ok", "Okay", "Oh", "Hey", "Hi", "Hello", "Thanks", "Thank", "Yes", "No",
    "Wow", "Yeah", "Yay", "Aw", "Aww", "Omg", "Lol", "Haha", "Congrats", "Congratulations", "Sure", "Well", "So",
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February", "March",
    "April", "May", "June", "July", "August", "September", "October", "November", "December", "Christmas", "Easter",
    "Thanksgiving", "Halloween", "New", "Year", "Eve", "God", "Lord", "Mr", "Mrs", "Ms", "Dr", "English", "Spanish",
    "French", "German", "American", "British", "Internet", "The", "A", "An", "It", "This", "That", "My", "Our",
    "We", "You", "He", "She", "They", "But", "And", "Also", "Just", "Anyway", "Plus", "Btw", "Today", "Tomorrow",
    "Yesterday", "Tonight", "Mom", "Dad", "Mum", "Sis", "Bro", "Grandma", "Grandpa", "Nana",
}
CONTRACTIONS = {"Here", "There", "That", "It", "What", "Who", "Where", "Let", "He", "She"}
SAME_NAME = 88  # rapidfuzz ratio at or above which two spellings name the same one ("Sara", "Sarah")


@dataclass(frozen=True)
class Mention:
    surface: str  # as said, normalised: "my sis", "Sarah"
    type: EntityType
    relation: str | None = None
    name: str | None = None


def find_mentions(text: str, known_names: set[str] | frozenset[str] = frozenset()) -> list[Mention]:
    """The entity mentions of one sentence, relation + name pairs first."""
    mentions: list[Mention] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= a or start >= b for a, b in taken)

    # "my sister Ana" before "Melanie, my sister" (a vocative looks like an apposition)
    for pattern, needs_name in ((RELATION_THEN_NAME, True), (NAME_THEN_RELATION, True), (RELATION_THEN_NAME, False), (NAMED, True)):
        for match in pattern.finditer(text):
            if not free(match.start(), match.end()):
                continue
            groups = match.groupdict()
            if needs_name and not (groups.get("name") or groups.get("apposed")):
                continue
            surface_word = match.group("rel").lower()
            relation, kind = RELATIONS[surface_word]
            name = groups.get("name") or groups.get("apposed")
            determiner = (groups.get("det") or "my").lower().replace("the user's", "my")
            if name and not looks_like_name(name.split()[0]):
                name = None
            if name and name.split()[-1] in NOT_NAMES:
                name = name.split()[0] if name.split()[0] not in NOT_NAMES else None
            mentions.append(Mention(f"{determiner} {surface_word}", kind, relation, name))
            taken.append((match.start(), match.end() if name else match.end("rel")))

    for match in CONDITIONS.finditer(text):
        mentions.append(Mention(match.group(1).lower(), "condition", name=match.group(1).lower()))

    first_word = re.match(r"\W*(\S+)", text)
    first_start = first_word.start(1) if first_word else 0
    for match in CAPITALISED.finditer(text):
        if not free(match.start(), match.end()):
            continue
        name = match.group(0).removesuffix("'s")
        words = name.split()
        start = match.start()
        if words[0] in NOT_NAMES:
            if len(words) == 1 or words[1] in NOT_NAMES:
                continue
            name, words, start = words[1], words[1:], start + len(words[0]) + 1
        if words[-1] in NOT_NAMES:
            name = words[0]
        possessive = match.group(0).endswith("'s")
        if start == first_start and not any(same_name(name, known) for known in known_names):
            continue  # a capital at the start of a sentence is no evidence of a name ("Here's", "Life")
        if possessive and name in CONTRACTIONS:
            continue
        if not looks_like_name(words[0]):
            continue
        before = text[:start]
        if ORGANISATION_BEFORE.search(before):
            kind: EntityType = "organisation"
        elif PLACE_BEFORE.search(before) and name not in known_names:
            kind = "place"
        else:
            kind = "person"
        mentions.append(Mention(name, kind, name=name))
    return mentions


def looks_like_name(word: str) -> bool:
    """Not a capitalised word of the language: "Seeing them ...", "Thankfully", "Hey"."""
    return word not in NOT_NAMES and not word.endswith(("ing", "ly"))


def same_name(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    if a == b or fuzz.ratio(a, b) >= SAME_NAME:
        return True
    first_a, first_b = a.split()[0], b.split()[0]
    if " " in a or " " in b:  # "Sarah" and "Sarah Jones"
        return first_a == first_b and (" " not in a or " " not in b)
    shorter, longer = sorted((a, b), key=len)
    return len(shorter) >= 3 and longer.startswith(shorter)  # a nickname: "Mel", "Melanie"


@dataclass
class MemoryText:
    """What resolution needs of one memory."""

    id: str
    text: str
    speaker: str
    by_user: bool  # said by the user (else by the other named speaker of a transcript)
    created_at: datetime


class EntityResolver:
    """Resolves mentions against a user's entities, growing them as it goes."""

    def __init__(self, user: UserRef, entities: list[Entity], skip_names: set[str] | None = None) -> None:
        self.user = user
        self.entities = {e.id: replace(e, aliases=list(e.aliases), memory_ids=list(e.memory_ids)) for e in entities}
        self.changed: set[str] = set()
        self.links: list[tuple[str, str]] = []
        self.skip_names = skip_names or set()  # the speakers themselves are not entities

    @property
    def known_names(self) -> set[str]:
        return {alias for e in self.entities.values() for alias in (e.name, *e.aliases) if alias[:1].isupper()}

    def link_memory(self, memory: MemoryText) -> list[str]:
        """Resolve the mentions of one memory and link it; returns the entity ids it mentions."""
        ids: list[str] = []
        for mention in find_mentions(memory.text, self.known_names):
            if mention.name and any(same_name(mention.name, s) for s in self.skip_names):
                if mention.relation is None:
                    continue  # a speaker ("Melanie", "Mel") is not someone they talk about
                mention = replace(mention, name=None)
            entity = self.resolve(mention, memory)
            if entity.id not in ids:
                ids.append(entity.id)
                if memory.id not in entity.memory_ids:
                    entity.memory_ids.append(memory.id)
                    self.links.append((entity.id, memory.id))
        return ids

    def resolve(self, mention: Mention, memory: MemoryText) -> Entity:
        relation = mention.relation
        surface = mention.surface
        if relation and not memory.by_user:
            relation = f"{relation} of {memory.speaker}"
            surface = f"{memory.speaker}'s {surface.split(' ', 1)[1]}"
        entity = self._find(mention, relation)
        if entity is None:
            key = f"{relation or ''}|{(mention.name or '').lower()}|{mention.type}"
            entity = Entity(
                id=stable_id("ent", self.user.tenant, self.user.user, key),
                type=mention.type,
                name=mention.name or surface,
                relation=relation,
                first_seen=memory.created_at,
            )
            self.entities[entity.id] = entity
        if mention.name and entity.name != mention.name and not _is_proper(entity.name):
            entity.name = mention.name  # an unnamed "my sister" learns her name
        if relation and entity.relation is None:
            entity.relation = relation
        for alias in (surface, mention.name):
            if alias and alias not in entity.aliases:
                entity.aliases.append(alias)
        entity.last_seen = max(entity.last_seen or memory.created_at, memory.created_at)
        entity.first_seen = min(entity.first_seen or memory.created_at, memory.created_at)
        self.changed.add(entity.id)
        return entity

    def _find(self, mention: Mention, relation: str | None) -> Entity | None:
        entities = list(self.entities.values())
        if relation and mention.name:
            same_relation = [e for e in entities if e.relation == relation]
            named = [e for e in same_relation if _is_proper(e.name) and same_name(e.name, mention.name)]
            if named:
                return _latest(named)
            unnamed = [e for e in same_relation if not _is_proper(e.name)]
            if unnamed:
                return _latest(unnamed)
            free = [e for e in entities if e.relation is None and e.type == mention.type and self._matches(e, mention.name)]
            return _latest(free) if free else None
        if relation:
            same_relation = [e for e in entities if e.relation == relation]
            return _latest(same_relation) if same_relation else None
        assert mention.name is not None
        if mention.type in {"person", "pet"}:
            candidates = [e for e in entities if e.type in {"person", "pet"} and self._matches(e, mention.name)]
        else:
            candidates = [e for e in entities if e.type == mention.type and self._matches(e, mention.name)]
            if not candidates and mention.type == "place":  # "visited Sarah" is a person, once known
                candidates = [e for e in entities if e.type == "person" and self._matches(e, mention.name)]
        return _latest(candidates) if candidates else None

    @staticmethod
    def _matches(entity: Entity, name: str) -> bool:
        return any(_is_proper(alias) and same_name(alias, name) for alias in (entity.name, *entity.aliases)) or (
            entity.type == "condition" and same_name(entity.name, name)
        )

    def changed_entities(self) -> list[Entity]:
        return [self.entities[i] for i in sorted(self.changed)]


def _is_proper(name: str) -> bool:
    return name[:1].isupper()


def _latest(entities: list[Entity]) -> Entity:
    return max(entities, key=lambda e: (e.last_seen.timestamp() if e.last_seen else 0.0, e.id))


def theme_label(entity: Entity) -> str:
    """How an entity reads as a recurring theme: "Sarah (sister)", "father", "breast cancer"."""
    if entity.relation and _is_proper(entity.name):
        return f"{entity.name} ({entity.relation})"
    if entity.relation:
        return f"relationship with {entity.relation}" if entity.type == "person" else entity.relation
    return entity.name


def entities_in_query(query: str, entities: list[Entity], skip_names: set[str]) -> list[Entity]:
    """The user's entities a turn refers to ("how is my sis?", "Sarah"), without creating any."""
    known = {alias for e in entities for alias in (e.name, *e.aliases) if _is_proper(alias)}
    found: dict[str, Entity] = {}
    for mention in find_mentions(query, known):
        if mention.relation:
            matched = [e for e in entities if e.relation == mention.relation]
            if mention.name:
                named = [e for e in matched if _is_proper(e.name) and same_name(e.name, mention.name)]
                matched = named or matched
        elif mention.name and mention.name not in skip_names:
            matched = [e for e in entities if EntityResolver._matches(e, mention.name)]
        else:
            matched = []
        for entity in matched:
            found[entity.id] = entity
    return list(found.values())
