"""Entity mentions and their resolution, and the arc's trend, on small scripted histories."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from salience.memory.arc import compute_arc
from salience.memory.entities import EntityResolver, MemoryText, find_mentions
from salience.model import MessageSignal, UserRef

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def resolve(*texts: str, by_user: bool = True, speaker: str = "user") -> EntityResolver:
    resolver = EntityResolver(UserRef("t", "u"), [], skip_names={"Melanie"})
    for n, text in enumerate(texts):
        resolver.link_memory(MemoryText(f"m{n}", text, speaker, by_user, T0 + timedelta(days=n)))
    return resolver


def test_relation_and_name_forms_are_read():
    assert [(m.relation, m.name, m.type) for m in find_mentions("Sarah, my sister, lives in Denver.")] == [
        ("sister", "Sarah", "person"), (None, "Denver", "place"),
    ]
    assert [(m.relation, m.name, m.type) for m in find_mentions("We adopted a cat named Bailey.")] == [("cat", "Bailey", "pet")]
    assert [(m.relation, m.name) for m in find_mentions("I love my kids, Seeing them happy is the best.")] == [("children", None)]
    assert find_mentions("Here's a photo of the lake.") == []  # a sentence-initial capital is not a name


def test_a_name_learnt_later_joins_the_unnamed_relation_and_a_nickname_joins_the_name():
    resolver = resolve("My brother lost his job.", "My brother Jonathan found a new one.", "Jon starts on Monday.")
    [jonathan] = resolver.changed_entities()
    assert (jonathan.name, jonathan.relation) == ("Jonathan", "brother")
    assert jonathan.aliases == ["my brother", "Jonathan", "Jon"]
    assert jonathan.memory_ids == ["m0", "m1", "m2"]


def test_the_other_speakers_family_is_theirs_and_the_speakers_are_not_entities():
    resolver = resolve("Melanie, my sister Ana is visiting us.", by_user=False, speaker="Caroline")
    [ana] = resolver.changed_entities()
    assert (ana.name, ana.relation, ana.aliases) == ("Ana", "sister of Caroline", ["Caroline's sister", "Ana"])


def test_replaying_the_same_history_gives_the_same_ids():
    texts = ("My sister Sarah is ill.", "My friend Sarah is visiting.", "Sarah brought soup.")
    first, again = resolve(*texts), resolve(*texts)
    assert [e.id for e in first.changed_entities()] == [e.id for e in again.changed_entities()]
    assert len(first.changed_entities()) == 2


def signal(session: int, mood: float, *topics: str) -> MessageSignal:
    return MessageSignal(f"m{session}-{mood}", f"s{session}", T0 + timedelta(days=session), mood, list(topics))


def test_a_steady_mood_is_stable_and_a_rise_is_rising():
    steady = compute_arc([signal(n, 0.2 + 0.01 * (n % 2), "work") for n in range(5)], [])
    assert (steady.mood_trend, steady.sessions_considered, steady.significant) == ("stable", 5, False)
    assert [(t.label, t.sessions) for t in steady.recurring_themes] == [("work", 5)]
    rising = compute_arc([signal(0, -0.6), signal(1, -0.1), signal(2, 0.5)], [])
    assert rising.mood_trend == "rising" and rising.statement.startswith("mood has risen over the last 3 sessions")
    assert compute_arc([signal(0, 0.5), signal(1, -0.5)], []).mood_trend == "unknown"


def test_the_arc_as_of_a_moment_ignores_later_sessions():
    signals = [signal(0, 0.8), signal(1, 0.3), signal(2, -0.4), signal(3, 0.9)]
    assert compute_arc(signals, [], at=T0 + timedelta(days=2, hours=1)).mood_trend == "falling"
    assert compute_arc(signals, []).mood_trend != "falling"


def test_the_llm_extractors_third_person_reads_as_the_users_own():
    assert [(m.surface, m.relation, m.name) for m in find_mentions("Sarah is the user's sister.")] == [("my sister", "sister", "Sarah")]
    assert [(m.surface, m.relation, m.name) for m in find_mentions("The user's manager Priya praised the report.")] == [
        ("my manager", "manager", "Priya"),
    ]
