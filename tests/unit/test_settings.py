"""Configuration: validated at start-up, secrets from the environment only."""

from __future__ import annotations

import pytest

from salience.settings import ConfigError, load_config
from tests.conftest import write_config


def test_env_references_are_resolved_and_unset_means_not_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("KEY_FOR_TEST", "sk-from-the-env")
    monkeypatch.delenv("UNSET_FOR_TEST", raising=False)
    config = load_config(write_config(tmp_path, {"acme": {
        "api_keys": ["os.environ/KEY_FOR_TEST", "os.environ/UNSET_FOR_TEST"],
        "upstream": {"api_base": "http://127.0.0.1:1/v1", "api_key": "os.environ/UNSET_FOR_TEST"},
    }}))
    tenant = config.tenants["acme"]
    assert tenant.api_keys == ["sk-from-the-env"]
    assert tenant.upstream.api_key is None
    assert tenant.upstream.resolved_transport == "relay"


def test_a_bad_field_names_the_file_the_field_and_the_reason(tmp_path):
    write_config(tmp_path, {"acme": {"memory": {"budget_tokens": "lots"}}})
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    message = str(caught.value)
    assert "tenants/acme.yaml" in message and "memory.budget_tokens" in message and "integer" in message


def test_unknown_fields_are_typos_not_silently_ignored(tmp_path):
    write_config(tmp_path, {"acme": {"debug_header": True}})
    with pytest.raises(ConfigError, match="debug_header"):
        load_config(tmp_path)


def test_a_key_shared_by_two_tenants_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARED_KEY", "sk-same-for-both")
    write_config(tmp_path, {"a": {"api_keys": ["os.environ/SHARED_KEY"]}, "b": {"api_keys": ["os.environ/SHARED_KEY"]}})
    with pytest.raises(ConfigError, match="also used by tenant"):
        load_config(tmp_path)


def test_environment_overrides_data_dir_and_store_url(tmp_path, monkeypatch):
    write_config(tmp_path, {"acme": {}})
    monkeypatch.setenv("SALIENCE_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_config(tmp_path).server.resolved_store_url == f"sqlite:///{tmp_path / 'elsewhere' / 'salience.db'}"
    monkeypatch.setenv("SALIENCE_STORE_URL", "sqlite:////tmp/x.db")
    assert load_config(tmp_path).server.resolved_store_url == "sqlite:////tmp/x.db"
    monkeypatch.setenv("SALIENCE_STORE_URL", "redis://:secret@redis.internal:6380/2")
    assert load_config(tmp_path).server.resolved_store_url == "redis://:secret@redis.internal:6380/2"


@pytest.mark.parametrize(
    ("upstream", "transport"),
    [
        ({}, "echo"),
        ({"api_base": "http://h/v1"}, "relay"),
        ({"api_base": "http://h/v1", "model": "gpt-4o-mini"}, "relay"),
        ({"api_base": "http://h/v1", "model": "hosted_vllm/llama"}, "relay"),
        ({"model": "anthropic/claude-sonnet-4-5"}, "litellm"),
        ({"api_base": "http://h:11434", "model": "ollama/llama3"}, "litellm"),
        ({"api_base": "http://h/v1", "model": "m", "transport": "litellm"}, "litellm"),
    ],
)
def test_transport_follows_the_upstream(tmp_path, upstream, transport):
    write_config(tmp_path, {"acme": {"upstream": upstream}})
    assert load_config(tmp_path).tenants["acme"].upstream.resolved_transport == transport


def test_the_shipped_example_config_is_valid(monkeypatch):
    monkeypatch.setenv("SALIENCE_DEMO_API_KEY", "sk-demo-for-test")
    for name in ("SALIENCE_UPSTREAM_URL", "SALIENCE_UPSTREAM_MODEL", "SALIENCE_UPSTREAM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    config = load_config("config")
    demo = config.tenants["demo"]
    assert demo.api_keys == ["sk-demo-for-test"]
    assert demo.debug_headers is True
    assert demo.upstream.resolved_transport == "echo"
    monkeypatch.setenv("SALIENCE_UPSTREAM_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("SALIENCE_UPSTREAM_MODEL", "gpt-4o-mini")
    assert load_config("config").tenants["demo"].upstream.model == "gpt-4o-mini"


def test_the_shipped_config_has_a_second_tenant_and_reads_compliance_secrets(monkeypatch):
    monkeypatch.setenv("SALIENCE_DEMO_API_KEY", "sk-demo-for-test")
    monkeypatch.setenv("SALIENCE_ACME_API_KEY", "sk-acme-for-test")
    monkeypatch.setenv("SALIENCE_ACME_MASTER_KEY", "m" * 40)
    monkeypatch.setenv("SALIENCE_ADMIN_KEY", "admin-key-for-tests")
    monkeypatch.delenv("SALIENCE_DEMO_MASTER_KEY", raising=False)
    config = load_config("config")
    assert config.tenants["acme"].api_keys == ["sk-acme-for-test"]
    assert config.tenants["acme"].master_key == "m" * 40 and config.tenants["demo"].master_key is None
    assert config.server.admin_key == "admin-key-for-tests"
    assert {t.region for t in config.tenants.values()} == {"local"}


def test_regions_and_the_older_data_region_name(tmp_path):
    write_config(tmp_path, {"a": {"region": "eu"}, "b": {"data_region": "eu"}, "c": {}},
                 {"regions": {"eu": "sqlite:///eu.db"}})
    config = load_config(tmp_path)
    assert [config.tenants[t].region for t in "abc"] == ["eu", "eu", "local"]
    assert config.server.region_store_url("eu") == "sqlite:///eu.db"


@pytest.mark.parametrize(
    ("tenant", "server", "reason"),
    [
        ({"upstream": {"transport": "relay"}}, {}, "needs api_base"),
        ({"upstream": {"transport": "litellm"}}, {}, "needs model"),
        ({}, {"store_url": "mongodb://x"}, "unsupported store URL"),
        ({}, {"embedder": {"model": "bge-large"}}, "all-MiniLM-L6-v2 only"),
        ({"master_key": "too-short"}, {}, "at least 32 characters"),
        ({}, {"regions": {"eu": "mongodb://x"}}, "region 'eu'"),
        ({}, {"extraction": {"gather_seconds": 11}}, "gather_seconds"),
        ({}, {"extraction": {"gather_seconds": -1}}, "gather_seconds"),
    ],
)
def test_impossible_settings_are_config_errors(tmp_path, tenant, server, reason):
    write_config(tmp_path, {"acme": tenant}, server)
    with pytest.raises(ConfigError, match=reason):
        load_config(tmp_path)


def test_the_worker_gathers_turns_for_a_third_of_a_second_unless_told_otherwise(tmp_path):
    write_config(tmp_path, {"acme": {}})
    assert load_config(tmp_path).server.extraction.gather_seconds == 0.3
    write_config(tmp_path, {"acme": {}}, {"extraction": {"gather_seconds": 0}})
    assert load_config(tmp_path).server.extraction.gather_seconds == 0
