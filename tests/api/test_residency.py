"""Residency: a tenant's data is written only to its region's store; a region without one stops start-up."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from salience.settings import ConfigError, load_config
from tests.conftest import write_config
from tests.helpers import wait_for_memories


def users_in(db) -> set[str]:
    conn = sqlite3.connect(db)
    found = set()
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        if "user_id" in columns:
            found |= {r[0] for r in conn.execute(f"SELECT user_id FROM {table}") if r[0]}
    conn.close()
    return found


async def test_each_tenant_writes_only_to_its_regions_store(make_proxy, upstream, tmp_path, monkeypatch, redis_server):
    redis_server.flush()
    monkeypatch.setenv("TEST_ACME_KEY", "sk-acme-" + "7" * 24)
    eu_db = tmp_path / "eu.db"
    proxy = make_proxy(
        upstream,
        tenant={"region": "eu"},
        server={"regions": {"eu": f"sqlite:///{eu_db}", "us": redis_server.url}},
        other_tenants={"acme": {"api_keys": ["os.environ/TEST_ACME_KEY"], "region": "us", "debug_headers": True}},
    )
    acme = {"authorization": "Bearer sk-acme-" + "7" * 24}
    async with proxy.client() as client, proxy.http() as http, httpx.AsyncClient(base_url=proxy.url, headers=acme) as other:
        raw = await client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "My sister Sarah lives in Lisbon now."}],
            extra_headers={"X-Salience-User": "eu-person"},
        )
        assert raw.headers["x-salience-region"] == "eu"
        await wait_for_memories(http, "eu-person", 1)
        reply = await other.post("/v1/chat/completions", headers={"X-Salience-User": "us-person"}, json={
            "model": "m", "messages": [{"role": "user", "content": "My brother Tom lives in Boston now."}]})
        assert reply.headers["x-salience-region"] == "us"
        await wait_for_memories(other, "us-person", 1)
        assert (await http.get("/v1/users/eu-person/export")).json()["region"] == "eu"
        assert (await other.get("/v1/users/us-person/export")).json()["region"] == "us"
    proxy.stop()
    assert users_in(eu_db) == {"eu-person"}
    keys = [k.decode() for k in redis_server.client().scan_iter(count=1000)]
    assert any("us-person" in k for k in keys)
    assert not any("eu-person" in k or "{demo:" in k or "audit:demo" in k for k in keys)
    assert not (tmp_path / "config0" / "data" / "salience.db").exists()  # the default store was never opened


def test_a_tenant_in_a_region_without_a_store_stops_start_up(tmp_path):
    write_config(tmp_path, {"demo": {"region": "eu"}}, {"regions": {"us": "sqlite:///us.db"}})
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path)
    assert "'demo'" in str(error.value) and "'eu'" in str(error.value) and "demo.yaml" in str(error.value)
