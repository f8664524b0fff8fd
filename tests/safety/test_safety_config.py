"""Safety settings: strict validation, resources by locale from a data file, tenant overrides."""

from __future__ import annotations

import pytest
import yaml

from salience.safety.policy import build_policy
from salience.settings import ConfigError, load_config
from tests.conftest import write_config


def test_the_shipped_demo_escalates_only_when_its_webhook_is_set(monkeypatch):
    monkeypatch.setenv("SALIENCE_DEMO_API_KEY", "sk-demo-for-test")
    monkeypatch.delenv("SALIENCE_DEMO_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("SALIENCE_DEMO_WEBHOOK_SECRET", raising=False)
    assert load_config("config").tenants["demo"].safety.escalation_enabled is False

    monkeypatch.setenv("SALIENCE_DEMO_WEBHOOK_URL", "https://safety.example.org/hooks")
    monkeypatch.setenv("SALIENCE_DEMO_WEBHOOK_SECRET", "whsec-0123456789abcdef")
    safety = load_config("config").tenants["demo"].safety
    assert safety.escalation_enabled and safety.webhook_secret == "whsec-0123456789abcdef"
    assert safety.escalation_threshold == "risk" and safety.include_message_text is False


@pytest.mark.parametrize(
    ("safety", "reason"),
    [
        ({"webhook_url": "https://x.example/h"}, "needs webhook_secret"),
        ({"webhook_url": "https://x.example/h", "webhook_secret": "short"}, "at least 16"),
        ({"webhook_url": "ftp://x.example/h", "webhook_secret": "0123456789abcdef"}, "http"),
        ({"escalation_threshold": "high"}, "escalation_threshold"),
        ({"locale": "english"}, "locale tag"),
        ({"resources_file": "nowhere.yaml"}, "cannot read the crisis resources file"),
        ({"webhook_urll": "https://x.example/h"}, "webhook_urll"),
    ],
)
def test_impossible_safety_settings_stop_start_up(tmp_path, safety, reason):
    write_config(tmp_path, {"acme": {"safety": safety}})
    with pytest.raises(ConfigError, match=reason):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en-US", "988 Suicide & Crisis Lifeline"),
        ("es-US", "988 Suicide & Crisis Lifeline"),
        ("en-GB", "116 123"),
        ("en-IE", "116 123"),
        ("fr-CA", "988 Suicide Crisis Helpline"),
        ("en-AU", "13 11 14"),
        ("de-DE", "findahelpline.com"),
        ("ja", "findahelpline.com"),
    ],
)
def test_resources_follow_the_tenant_locale(tmp_path, locale, expected):
    config = load_config(write_config(tmp_path, {"acme": {"safety": {"locale": locale}}}))
    policy = build_policy(config.tenants["acme"], tmp_path)
    rendered = "\n".join(f"{r.name}: {r.contact}" for r in policy.resources)
    assert expected in rendered


def test_a_tenant_can_replace_the_resources_file_or_its_entries(tmp_path):
    (tmp_path / "lines.yaml").write_text(yaml.safe_dump({
        "regions": {"NZ": [{"name": "Need to talk?", "contact": "call or text 1737"}]},
        "fallback": [{"name": "Local help", "contact": "ask your GP"}],
    }))
    config = load_config(write_config(tmp_path, {
        "kiwi": {"safety": {"locale": "en-NZ", "resources_file": "lines.yaml"}},
        "own": {"safety": {"resources": [{"name": "Our care team", "contact": "call 0800 123 456"}]}},
    }))
    assert [r.contact for r in build_policy(config.tenants["kiwi"], tmp_path).resources] == ["call or text 1737"]
    assert [r.name for r in build_policy(config.tenants["own"], tmp_path).resources] == ["Our care team"]


def test_a_malformed_resources_file_names_the_problem(tmp_path):
    (tmp_path / "lines.yaml").write_text(yaml.safe_dump({"regions": {"US": [{"name": "x"}]}, "fallback": []}))
    write_config(tmp_path, {"acme": {"safety": {"resources_file": "lines.yaml"}}})
    with pytest.raises(ConfigError, match="lines.yaml.*contact"):
        load_config(tmp_path)
