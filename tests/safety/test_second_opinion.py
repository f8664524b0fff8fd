"""The optional second opinion: an LLM classifier through litellm (the fake upstream answers)."""

from __future__ import annotations

import json

import pytest

SECOND = {"model": "openai/fake-model", "api_key": "os.environ/TEST_CLASSIFIER_KEY", "when": "always"}


@pytest.fixture(autouse=True)
def classifier_key(monkeypatch):
    monkeypatch.setenv("TEST_CLASSIFIER_KEY", "sk-classifier-secret")


def second_opinion(upstream, **overrides):
    return {"safety": {"second_opinion": {**SECOND, "api_base": upstream.url, **overrides}}}


async def test_the_second_opinion_adds_what_the_rules_missed(make_proxy, upstream):
    upstream.content = json.dumps({"flags": [
        {"category": "self_harm", "severity": "risk", "score": 0.82, "evidence": "the pencil sharpener is in pieces"},
    ]})
    proxy = make_proxy(tenant=second_opinion(upstream))
    async with proxy.http() as http:
        result = (await http.post("/v1/safety/classify", json={"text": "the pencil sharpener is in pieces on my desk"})).json()
    assert result["flags"] == [{"category": "self_harm", "severity": "risk", "score": 0.82,
                                "evidence": "the pencil sharpener is in pieces"}]
    sent = upstream.requests[-1]
    assert sent["model"] == "fake-model" and sent["temperature"] == 0
    assert json.loads(sent["messages"][1]["content"]) == "the pencil sharpener is in pieces on my desk"


async def test_the_second_opinion_can_raise_but_never_clear_a_flag(make_proxy, upstream):
    upstream.content = json.dumps({"flags": []})
    proxy = make_proxy(tenant=second_opinion(upstream, when="flagged"))
    async with proxy.http() as http:
        kept = (await http.post("/v1/safety/classify", json={"text": "I want to kill myself"})).json()
        calm = (await http.post("/v1/safety/classify", json={"text": "I baked bread"})).json()
    assert [f["category"] for f in kept["flags"]] == ["suicidal_ideation"]
    assert calm["flags"] == []
    assert len(upstream.requests) == 1  # "flagged": the calm message was never sent out


async def test_an_answer_that_is_not_the_json_asked_for_falls_back_to_the_offline_flags(make_proxy, upstream):
    upstream.content = "Sure! This message seems concerning."
    proxy = make_proxy(tenant=second_opinion(upstream))
    async with proxy.http() as http:
        result = (await http.post("/v1/safety/classify", json={"text": "my husband hits me"})).json()
    assert [(f["category"], f["severity"]) for f in result["flags"]] == [("abuse_or_violence", "risk")]


async def test_an_unreachable_second_opinion_does_not_break_the_reply(make_proxy, upstream):
    tenant = second_opinion(upstream, api_base="http://127.0.0.1:9/v1", timeout_seconds=1)
    proxy = make_proxy(upstream, tenant=tenant)
    async with proxy.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "I want to kill myself"}], user="ivy",
        )
    assert raw.headers["x-salience-safety"] == "suicidal_ideation:risk"
