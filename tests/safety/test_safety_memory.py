"""The safety layer through the public surfaces: the openai client, the memory and safety APIs.

A disclosure must never be forgotten: weeks and hundreds of memories later, with a tiny
budget, the model still sees the pinned note and the crisis resources of the tenant's
locale, until the app deletes that memory.
"""

from __future__ import annotations

import pytest

from tests.helpers import memory_block, wait_for_memories
from tests.conftest import STORE_BACKENDS

pytestmark = pytest.mark.parametrize("store_backend", STORE_BACKENDS, indirect=True)

DISCLOSURE_SESSION = {
    "id": "s-2026-01-05",
    "started_at": "2026-01-05T21:00:00Z",
    "messages": [
        {"id": "d1", "role": "user", "content": "Honestly I just want to die. I've been thinking about ending my life.", "timestamp": "2026-01-05T21:00:00Z"},
        {"id": "d2", "role": "assistant", "content": "I'm really glad you told me. Are you safe right now?"},
    ],
}
RELATIVES = ["cousin", "aunt", "neighbour", "colleague", "uncle", "friend", "sister-in-law", "landlord", "dentist", "coach"]
NAMES = ["Tom", "Lisa", "Omar", "Yuki", "Priya", "Lars", "Nia", "Pablo", "Greta", "Ivan", "Mei", "Kofi", "Sara", "Ben", "Ada"]
CITIES = ["Oslo", "Rome", "Lagos", "Lima", "Kyoto", "Austin", "Cork", "Perth", "Quebec", "Malmo", "Porto", "Accra", "Hanoi"]
ACTIVITIES = ["pottery", "chess", "marathons", "sourdough", "jazz guitar", "bouldering", "watercolours", "sailing",
              "beekeeping", "salsa", "origami", "astronomy", "woodwork", "birdwatching", "fencing", "calligraphy"]


def newer_sessions(count: int) -> list[dict]:
    """Ordinary sessions after the disclosure: hundreds of newer, unrelated memories."""
    sessions = []
    for index in range(count):
        relative, name = RELATIVES[index % len(RELATIVES)], NAMES[index % len(NAMES)]
        city, activity = CITIES[index % len(CITIES)], ACTIVITIES[index % len(ACTIVITIES)]
        sessions.append({
            "id": f"s-later-{index}",
            "started_at": f"2026-02-{1 + index % 27:02d}T10:{index % 60:02d}:00Z",
            "messages": [
                {"id": f"later-{index}-a", "role": "user", "content": f"My {relative} {name} moved to {city} in {1990 + index}."},
                {"id": f"later-{index}-b", "role": "user", "content": f"I have been learning {activity} for {index + 2} weeks with {name}."},
            ],
        })
    return sessions


async def test_a_disclosure_is_pinned_first_weeks_later_despite_a_tiny_budget_and_hundreds_of_memories(make_proxy, upstream):
    proxy = make_proxy(upstream, memory={"budget_tokens": 50})
    async with proxy.http() as http, proxy.client() as client:
        imported = (await http.post("/v1/users/ana/import", json={"sessions": [DISCLOSURE_SESSION, *newer_sessions(150)]})).json()
        assert imported["safety_flagged"] == 1
        assert imported["memories_added"] >= 200

        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "What should I cook for dinner tonight?"}], user="ana",
        )
    block = memory_block(upstream.last_messages())
    safety_part = block.split("</safety>")[0]
    assert block.index("<safety>") < block.index("</safety>")
    assert "suicidal thoughts" in safety_part and "2026-01-05" in safety_part
    assert "988" in safety_part  # the tenant's locale is en-US
    assert "never describe methods" in safety_part
    assert "ending my life" not in block  # the pinned note is ours, not the user's words


async def test_several_disclosures_are_summarised_compactly(make_proxy, upstream):
    proxy = make_proxy(upstream)
    sessions = [
        {"id": f"s{i}", "started_at": f"2026-01-{day:02d}T20:00:00Z",
         "messages": [{"id": f"m{i}", "role": "user", "content": text}]}
        for i, (day, text) in enumerate([
            (3, "I don't see the point anymore."),
            (9, "I keep thinking about killing myself."),
            (20, "I want to die, I have the pills ready for tonight."),
        ])
    ]
    async with proxy.http() as http, proxy.client() as client:
        await http.post("/v1/users/bo/import", json={"sessions": sessions})
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi again"}], user="bo")
    safety_part = memory_block(upstream.last_messages()).split("</safety>")[0]
    [line] = [line for line in safety_part.splitlines() if line.startswith("- suicidal thoughts")]
    assert "latest severity: imminent" in line
    assert "3 times" in line and "first 2026-01-03" in line and "last 2026-01-20" in line


async def test_a_flagged_message_gets_guidance_and_resources_at_once_and_a_debug_header(make_proxy, upstream):
    proxy = make_proxy(upstream, tenant={"safety": {"locale": "en-GB"}})
    async with proxy.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "I want to kill myself."}], user="cy",
        )
        calm = await client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "I made soup today."}], user="dee",
        )
    assert raw.headers["x-salience-safety"] == "suicidal_ideation:risk"
    assert calm.headers["x-salience-safety"] == "none"
    block = memory_block(upstream.requests[0]["messages"])
    assert "Samaritans" in block and "116 123" in block
    assert "latest message was flagged" in block
    assert memory_block(upstream.requests[1]["messages"]) == ""


async def test_an_anonymous_crisis_still_gets_resources_but_nothing_is_stored(make_proxy, upstream):
    proxy = make_proxy(upstream, tenant={"safety": {"locale": "en-AU"}})
    async with proxy.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "I just took a whole bottle of pills"}],
        )
    assert raw.headers["x-salience-memory"] == "off"
    assert raw.headers["x-salience-safety"] == "medical_emergency:imminent"
    assert "13 11 14" in memory_block(upstream.last_messages())


async def test_deleting_the_safety_memory_stops_its_injection(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.http() as http, proxy.client() as client:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Everyone would be better off without me."}], user="eli",
        )
        memories = (await http.get("/v1/users/eli/memories")).json()["data"]
        [safety] = [m for m in memories if m["kind"] == "safety"]
        assert safety["pinned"] is True

        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Any film tips?"}], user="eli")
        assert "<safety>" in memory_block(upstream.last_messages())

        deleted = await http.delete(f"/v1/users/eli/memories/{safety['id']}")
        body = deleted.json()
        assert {k: body[k] for k in ("id", "object", "deleted")} == {"id": safety["id"], "object": "salience.memory.deleted", "deleted": True}
        assert body["receipt"]["memory_id"] == safety["id"] and body["receipt"]["removed"]["memories"] == 1
        assert (await http.get(f"/v1/users/eli/memories/{safety['id']}")).status_code == 404
        assert (await http.delete(f"/v1/users/eli/memories/{safety['id']}")).status_code == 404

        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Any film tips?"}], user="eli")
    assert "<safety>" not in memory_block(upstream.last_messages())


async def test_classify_returns_flags_for_apps(make_proxy):
    proxy = make_proxy()
    async with proxy.http() as http:
        flagged = (await http.post("/v1/safety/classify", json={"text": "my husband hits me when he drinks"})).json()
        idiom = (await http.post("/v1/safety/classify", json={"text": "this commute is killing me"})).json()
        bad = await http.post("/v1/safety/classify", json={"txt": "x"})
        anonymous = await http.post("/v1/safety/classify", json={"text": "x"}, headers={"authorization": ""})
    [flag] = flagged["flags"]
    assert flag["category"] == "abuse_or_violence" and flag["severity"] == "risk"
    assert 0 < flag["score"] <= 1 and "hits me" in flag["evidence"]
    assert idiom["flags"] == []
    assert bad.status_code == 400
    assert anonymous.status_code == 401


async def test_crisis_sentences_are_remembered_only_as_the_pinned_note(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.http() as http, proxy.client() as client:
        await client.chat.completions.create(
            model="m", user="jo",
            messages=[{"role": "user", "content": "My dog Pip died on Sunday. I have been saving up my pills to end my life."}],
        )
        memories = await wait_for_memories(http, "jo", at_least=2)
    texts = [m["text"] for m in memories]
    assert "My dog Pip died on Sunday." in texts
    assert not any("pills" in text for text in texts)
    assert [m["kind"] for m in memories if m["pinned"]] == ["safety"]


async def test_classify_catches_a_phrasing_no_rule_was_written_for(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.http() as http, proxy.client() as client:
        result = (await http.post("/v1/safety/classify", json={"text": "the pills are in my hand right now"})).json()
        negated = (await http.post("/v1/safety/classify", json={"text": "I would never hurt myself"})).json()
        raw = await client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "I carved his name into my arm"}],
            user="noa",
        )
    [flag] = result["flags"]
    assert flag["category"] == "suicidal_ideation" and flag["severity"] == "imminent"
    assert 0 < flag["score"] <= 1 and flag["evidence"] == "the pills are in my hand right now"
    assert negated["flags"] == []
    assert raw.headers["x-salience-safety"].startswith("self_harm:")
    assert "<safety>" in memory_block(upstream.last_messages())
