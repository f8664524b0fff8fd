"""Knowing the person across sessions: entities, the LLM extractor's decisions, the arc."""

from __future__ import annotations

import json

import pytest

from tests.conftest import STORE_BACKENDS
from tests.helpers import memory_block, wait_for_memories

pytestmark = pytest.mark.parametrize("store_backend", STORE_BACKENDS, indirect=True)

SISTER_SESSIONS = [
    "My sister was just diagnosed with breast cancer.",
    "My sister Sarah starts chemo at the city hospital.",
    "Sarah said the first round of chemo left her completely exhausted.",
    "Sarah's hair started falling out and she cried on the phone with me.",
    "My sis called me and she sounds stronger now.",
]

OTHERS = [
    "My neighbour Tom is doing much better after his knee surgery.",
    "My coworker Dana is doing great in her new role at the bank.",
    "Tom is doing his physio every morning now.",
    "Dana says the whole team is doing fine without me.",
]


def session(session_id: str, day: str, *texts: str, user: str = "Nora") -> dict:
    return {
        "id": session_id,
        "started_at": f"{day}T18:00:00Z",
        "messages": [
            {"id": f"{session_id}:{n}", "role": "user", "content": text, "timestamp": f"{day}T18:{n:02d}:00Z"}
            for n, text in enumerate(texts)
        ],
    }


async def test_my_sister_sarah_and_my_sis_are_one_person_and_recall_follows_the_link(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client() as client, proxy.http() as http:
        for n, text in enumerate(SISTER_SESSIONS, start=1):
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": text}],
                extra_headers={"X-Salience-User": "nora", "X-Salience-Session": f"s{n}"},
            )
        for n, text in enumerate(OTHERS, start=6):  # other people, doing well or not: what a bare text match would take
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": text}],
                extra_headers={"X-Salience-User": "nora", "X-Salience-Session": f"s{n}"},
            )
        await wait_for_memories(http, "nora", at_least=len(SISTER_SESSIONS) + len(OTHERS))
        entities = (await http.get("/v1/users/nora/entities")).json()["data"]
        recall = (await http.post("/v1/users/nora/recall", json={"query": "how is my sister doing?"})).json()

    people = [e for e in entities if e["type"] == "person"]
    assert sorted(e["name"] for e in people) == ["Dana", "Sarah", "Tom"], people
    sarah = next(e for e in people if e["name"] == "Sarah")
    assert sarah["name"] == "Sarah" and sarah["relation"] == "sister"
    assert {"my sister", "Sarah", "my sis"} <= set(sarah["aliases"])
    assert {m["text"] for m in sarah["memories"]} == set(SISTER_SESSIONS)
    assert any(e["type"] == "condition" and e["name"] == "breast cancer" for e in entities)
    recalled = {item["text"] for item in recall["items"]}
    assert recall["found"] is True
    assert {SISTER_SESSIONS[2], SISTER_SESSIONS[3]} <= recalled  # they only say "Sarah"
    best_first = sorted(recall["items"], key=lambda item: -item["score"])
    assert {item["text"] for item in best_first[: len(SISTER_SESSIONS)]} == set(SISTER_SESSIONS)


async def test_two_sarahs_with_different_relations_stay_two_people(make_proxy):
    proxy = make_proxy()
    sessions = [
        session("a", "2024-03-01", "My sister Sarah lives in Denver with her two kids."),
        session("b", "2024-03-08", "My friend Sarah from the climbing gym invited me to her wedding."),
        session("c", "2024-03-15", "My sister called to say the kids have the flu."),
    ]
    async with proxy.http() as http:
        await http.post("/v1/users/ana/import", json={"sessions": sessions})
        entities = (await http.get("/v1/users/ana/entities")).json()["data"]
    sarahs = sorted((e for e in entities if e["name"] == "Sarah"), key=lambda e: e["relation"])
    assert [(e["relation"], len(e["memories"])) for e in sarahs] == [("friend", 1), ("sister", 2)]
    assert sarahs[0]["id"] != sarahs[1]["id"]


async def test_forgetting_a_memory_unlinks_it_and_drops_an_entity_left_with_none(make_proxy):
    proxy = make_proxy()
    sessions = [
        session("a", "2024-03-01", "My dog Biscuit loves the beach."),
        session("b", "2024-03-08", "Biscuit chewed through my new running shoes."),
    ]
    async with proxy.http() as http:
        await http.post("/v1/users/ben/import", json={"sessions": sessions})
        [biscuit] = (await http.get("/v1/users/ben/entities")).json()["data"]
        assert (biscuit["type"], biscuit["relation"], len(biscuit["memories"])) == ("pet", "dog", 2)
        first, second = (m["id"] for m in biscuit["memories"])
        await http.delete(f"/v1/users/ben/memories/{first}")
        [left] = (await http.get("/v1/users/ben/entities")).json()["data"]
        assert [m["id"] for m in left["memories"]] == [second]
        await http.delete(f"/v1/users/ben/memories/{second}")
        assert (await http.get("/v1/users/ben/entities")).json()["data"] == []


LLM = {"model": "openai/fake-model", "api_key": "os.environ/TEST_EXTRACTOR_KEY"}


def llm_answer(*decisions: dict) -> str:
    return json.dumps({"decisions": [{"memory": None, "kind": "relationship", "source": "t1", "target": None, **d}
                                     for d in decisions]})


async def test_llm_mode_a_breakup_updates_the_relationship_instead_of_keeping_both(make_proxy, upstream, monkeypatch):
    monkeypatch.setenv("TEST_EXTRACTOR_KEY", "sk-extractor-secret")
    proxy = make_proxy(server={"extraction": {"llm": {**LLM, "api_base": upstream.url}}})
    async with proxy.http() as http:
        upstream.content = llm_answer({"action": "ADD", "memory": "The user is dating Alex."})
        await http.post("/v1/users/kim/import", json={"sessions": [
            session("s1", "2024-05-01", "I've been dating Alex for three months now."),
        ]})
        upstream.content = llm_answer({"action": "UPDATE", "target": "m1", "memory": "The user broke up with Alex yesterday."})
        second = [session("s2", "2024-06-10", "Alex and I broke up.")]
        await http.post("/v1/users/kim/import", json={"sessions": second})
        calls = len(upstream.requests)
        again = (await http.post("/v1/users/kim/import", json={"sessions": second})).json()
        memories = (await http.get("/v1/users/kim/memories")).json()["data"]
        entities = (await http.get("/v1/users/kim/entities")).json()["data"]

    assert [m["text"] for m in memories] == ["The user broke up with Alex yesterday (9 June 2024)."]
    assert memories[0]["sources"] == ["s1:0", "s2:0"] and memories[0]["kind"] == "relationship"
    assert len(upstream.requests) == calls and again["memories_added"] == 0  # each message is extracted once
    sent = upstream.requests[1]
    assert sent["response_format"]["type"] == "json_schema" and sent["response_format"]["json_schema"]["strict"] is True
    shown = json.loads(sent["messages"][1]["content"])
    assert shown["memories"][0] == {"ref": "m1", "text": "The user is dating Alex.", "kind": "relationship",
                                    "said_at": "2024-05-01T18:00:00+00:00"}
    assert [e["name"] for e in entities] == ["Alex"] and len(entities[0]["memories"]) == 1


async def test_offline_mode_keeps_the_breakup_next_to_the_dating_memory_dated(make_proxy):
    """Offline there is no UPDATE: both statements stay, each with its date (documented)."""
    proxy = make_proxy()
    async with proxy.http() as http:
        await http.post("/v1/users/kim/import", json={"sessions": [
            session("s1", "2024-05-01", "I've been dating Alex for three months now."),
            session("s2", "2024-06-10", "Alex and I broke up yesterday."),
        ]})
        memories = (await http.get("/v1/users/kim/memories")).json()["data"]
        [alex] = (await http.get("/v1/users/kim/entities")).json()["data"]
    assert [m["text"] for m in memories] == [
        "I've been dating Alex for three months now.", "Alex and I broke up yesterday (9 June 2024).",
    ]
    assert len(alex["memories"]) == 2


DARKENING = [
    ("2024-04-01", ["I had a lovely day at the park with friends, I feel great!", "Work was fun and I got praised."]),
    ("2024-04-08", ["Work was stressful this week and I feel a bit tired.", "Nothing much else happened."]),
    ("2024-04-15", ["I feel miserable and hopeless, everything is falling apart.", "I cried all night, I hate this."]),
]


async def test_three_darkening_sessions_give_a_falling_trend_in_the_arc_and_the_injected_note(make_proxy, upstream):
    proxy = make_proxy(upstream)
    sessions = [session(f"d{n}", day, *texts) for n, (day, texts) in enumerate(DARKENING)]
    async with proxy.http() as http, proxy.client() as client:
        await http.post("/v1/users/lee/import", json={"sessions": sessions})
        arc = (await http.get("/v1/users/lee/arc")).json()
        recall = (await http.post("/v1/users/lee/recall", json={"query": "what should I cook tonight?"})).json()
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "what should I cook tonight?"}], user="lee",
        )
    moods = [s["mood"] for s in arc["sessions"]]
    assert len(moods) == 3 and moods[0] > moods[1] > moods[2]
    assert arc["mood_trend"] == "falling" and arc["sessions_considered"] == 3
    assert "mood has fallen over the last 3 sessions" in arc["statement"]
    assert recall["arc"]["mood_trend"] == "falling" and recall["arc"]["sessions_considered"] == 3
    block = memory_block(upstream.last_messages())
    assert "mood has fallen over the last 3 sessions, each lower than the one before" in block
    from salience.memory.tokens import count_tokens

    assert count_tokens(block) <= 400  # the tenant's budget holds with the arc in it


async def test_a_topic_across_five_sessions_is_a_recurring_theme_with_its_count(make_proxy):
    proxy = make_proxy()
    days = ["2024-02-01", "2024-02-05", "2024-02-09", "2024-02-13", "2024-02-17", "2024-02-21"]
    texts = [
        "My boss criticised my report in front of everyone.",
        "I went hiking on the coast and saw seals.",
        "My boss wants the project done by Friday.",
        "My boss finally said the report was good.",
        "I am thinking about asking my boss for a raise.",
        "My boss signed off on my holiday.",
    ]
    sessions = [session(f"w{n}", day, text) for n, (day, text) in enumerate(zip(days, texts))]
    async with proxy.http() as http:
        await http.post("/v1/users/max/import", json={"sessions": sessions})
        arc = (await http.get("/v1/users/max/arc")).json()
        recall = (await http.post("/v1/users/max/recall", json={"query": "how is work going with my boss?"})).json()
    themes = {t["label"]: t["sessions"] for t in arc["recurring_themes"]}
    assert themes["relationship with boss"] == 5
    assert themes["work"] == 5
    assert {"label": "relationship with boss", "sessions": 5} in recall["arc"]["recurring_themes"]
    assert len(arc["sessions"]) == 6 and arc["sessions"][1]["topics"] == [{"label": "hobbies", "messages": 1}]


async def test_a_topic_newly_beside_a_crisis_disclosure_is_flagged_in_the_arc_and_the_note(make_proxy):
    proxy = make_proxy()
    sessions = [
        session("c0", "2024-01-10", "Work has been busy but my team is great."),
        session("c1", "2024-01-17", "I finished the big project at work and celebrated."),
        session("c2", "2024-01-24", "I lost my job today and I want to kill myself."),
    ]
    async with proxy.http() as http:
        await http.post("/v1/users/rio/import", json={"sessions": sessions})
        arc = (await http.get("/v1/users/rio/arc")).json()
        recall = (await http.post("/v1/users/rio/recall", json={"query": "any plans for the weekend?"})).json()
    assert [s["flagged_messages"] for s in arc["sessions"]] == [0, 0, 1]
    assert "work" in arc["crisis_adjacent"] and arc["significant"] is True
    assert "Newly close to a crisis disclosure: " in recall["context"] and "work" in recall["context"]


async def test_llm_mode_deletes_what_the_exchange_disproves_and_falls_back_offline_on_a_bad_answer(
    make_proxy, upstream, monkeypatch
):
    monkeypatch.setenv("TEST_EXTRACTOR_KEY", "sk-extractor-secret")
    proxy = make_proxy(server={"extraction": {"llm": {**LLM, "api_base": upstream.url}}})
    async with proxy.http() as http:
        upstream.content = llm_answer({"action": "ADD", "memory": "The user is vegetarian.", "kind": "preference"})
        await http.post("/v1/users/ivo/import", json={"sessions": [session("s1", "2024-05-01", "I have been vegetarian for years.")]})
        upstream.content = llm_answer({"action": "DELETE", "target": "m1"}, {"action": "NOOP"})
        await http.post("/v1/users/ivo/import", json={"sessions": [session("s2", "2024-05-09", "Actually I was never vegetarian, I eat fish.")]})
        after_delete = [m["text"] for m in (await http.get("/v1/users/ivo/memories")).json()["data"]]
        upstream.content = "Sure! Here is what I would remember: the user likes hiking."
        await http.post("/v1/users/ivo/import", json={"sessions": [session("s3", "2024-05-20", "I started hiking every weekend with my brother.")]})
        memories = [m["text"] for m in (await http.get("/v1/users/ivo/memories")).json()["data"]]
    assert after_delete == []
    assert memories == ["I started hiking every weekend with my brother."]  # the offline extractor's memory
