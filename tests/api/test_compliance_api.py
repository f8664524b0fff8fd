"""Compliance through the public API: erasure with receipts, export, isolation, audit, encryption."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys

import pytest

from tests.cli.test_cli import offline_env
from tests.conftest import STORE_BACKENDS
from tests.helpers import memory_block, wait_for_memories

FIVE = [
    "My dog Biscuit loves chasing tennis balls in the park.",
    "I work as a nurse at the city hospital.",
    "My favourite food is spicy ramen with extra garlic.",
    "I am learning to play the cello this year.",
    "My brother Tomasz lives in Gdansk with his wife.",
]
TARGET = FIVE[4]


def import_five() -> dict:
    return {
        "sessions": [
            {"id": f"s{i}", "started_at": f"2024-03-0{i + 1}T10:00:00Z",
             "messages": [{"id": f"m{i}", "role": "user", "content": text, "timestamp": f"2024-03-0{i + 1}T10:00:00Z"}]}
            for i, text in enumerate(FIVE)
        ]
    }


async def ask(client, user: str, text: str):
    return await client.chat.completions.with_raw_response.create(
        model="fake-model", messages=[{"role": "user", "content": text}], extra_headers={"X-Salience-User": user}
    )


@pytest.mark.parametrize("store_backend", STORE_BACKENDS, indirect=True)
async def test_erasing_one_memory_of_five_removes_it_everywhere_and_keeps_the_others(make_proxy, upstream, tmp_path):
    data_dir = str(tmp_path / "data")
    proxy = make_proxy(upstream, server={"data_dir": data_dir})
    async with proxy.client() as client, proxy.http() as http:
        assert (await http.post("/v1/users/ola/import", json=import_five())).json()["memories_added"] == 5
        memories = {m["text"]: m["id"] for m in await wait_for_memories(http, "ola", 5)}
        target = memories[TARGET]
        names = {e["name"] for e in (await http.get("/v1/users/ola/entities")).json()["data"]}
        assert {"Tomasz", "Biscuit"} <= names
        raw = await ask(client, "ola", "Where does my brother Tomasz live?")
        assert target in raw.headers["x-salience-memories"].split(",")
        trace_id = raw.headers["x-salience-trace"]
        assert (await http.get(f"/v1/traces/{trace_id}")).status_code == 200

        erased = await http.delete(f"/v1/users/ola/memories/{target}")
        assert erased.status_code == 200
        body = erased.json()
        assert body["deleted"] is True and body["id"] == target
        receipt = body["receipt"]
        assert receipt["memory_id"] == target and receipt["user"] == "ola"
        assert receipt["removed"]["memories"] == 1 and receipt["removed"]["embeddings"] == 1
        assert receipt["removed"]["messages"] == 1 and receipt["removed"]["traces"] >= 1
        assert "Tomasz" not in str(receipt)

        async def check_gone_and_others_kept() -> None:
            listed = {m["id"] for m in await wait_for_memories(http, "ola", 4)}
            assert listed == set(memories.values()) - {target}
            assert (await http.get(f"/v1/users/ola/memories/{target}")).status_code == 404
            recall = (await http.post("/v1/users/ola/recall", json={"query": "Where does my brother Tomasz live in Gdansk?"})).json()
            assert target not in {i["id"] for i in recall["items"]} and "Tomasz" not in recall["context"]
            kept = (await http.post("/v1/users/ola/recall", json={"query": "What is my dog Biscuit chasing?"})).json()
            assert memories[FIVE[0]] in {i["id"] for i in kept["items"]}
            export = (await http.get("/v1/users/ola/export")).json()
            assert {m["id"] for m in export["memories"]} == set(memories.values()) - {target}
            assert "Tomasz" not in str(export) and "Gdansk" not in str(export)
            assert (await http.get(f"/v1/traces/{trace_id}")).status_code == 404
            entities = (await http.get("/v1/users/ola/entities")).json()["data"]
            assert "Biscuit" in {e["name"] for e in entities}
            assert "Tomasz" not in str(entities) and target not in str(entities)
            again = await ask(client, "ola", "Where does my brother Tomasz live?")
            assert target not in again.headers["x-salience-memories"]
            assert "Gdansk" not in memory_block(upstream.last_messages())
            assert "Gdansk" not in str((await http.get(f"/v1/traces/{again.headers['x-salience-trace']}")).json()["messages"][:-1])

        await check_gone_and_others_kept()
        audit = (await http.get("/v1/users/ola/audit")).json()["data"]
        erasures = [e for e in audit if e["action"] == "memory.erase"]
        assert erasures and erasures[0]["ids"] == [target]
        assert "Tomasz" not in str(audit)
    proxy.stop()
    restarted = make_proxy(upstream, server={"data_dir": data_dir})
    restarted_client, restarted_http = restarted.client(), restarted.http()
    async with restarted_client as client, restarted_http as http:
        await check_gone_and_others_kept()


def user_rows_outside_audit(db: str, user: str) -> list[tuple[str, tuple]]:
    conn = sqlite3.connect(db)
    found = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
        if table.startswith("audit_"):
            continue
        for row in conn.execute(f"SELECT * FROM {table}"):
            if any(user in (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)) for v in row):
                found.append((table, row))
    conn.close()
    return found


async def test_erasing_a_user_leaves_no_row_of_theirs_in_the_sqlite_file(make_proxy, upstream, tmp_path):
    proxy = make_proxy(upstream, server={"data_dir": str(tmp_path / "data")})
    db = str(tmp_path / "data" / "salience.db")
    async with proxy.client() as client, proxy.http() as http:
        await http.post("/v1/users/wiktoria-erased/import", json=import_five())
        await ask(client, "wiktoria-erased", "I feel hopeless and I want to kill myself.")  # a safety record too
        await ask(client, "wiktoria-erased", "My cat Pumpernickel sleeps on my keyboard every morning.")
        await ask(client, "kept-user", "My cat Pumpernickel sleeps on my keyboard every morning.")
        await wait_for_memories(http, "wiktoria-erased", 6)
        await wait_for_memories(http, "kept-user", 1)
        assert user_rows_outside_audit(db, "wiktoria-erased")  # the inspection sees rows while they exist

        erased = await http.delete("/v1/users/wiktoria-erased")
        assert erased.status_code == 200
        removed = erased.json()["receipt"]["removed"]
        assert removed["memories"] >= 6 and removed["data_keys"] == 1 and removed["safety_records"] == 1
        assert removed["sessions"] >= 1 and removed["messages"] >= 6
        for path in ("/memories", "/export"):
            assert (await http.get(f"/v1/users/wiktoria-erased{path}")).status_code == 404
        assert (await http.delete("/v1/users/wiktoria-erased")).status_code == 404
        audit = (await http.get("/v1/users/wiktoria-erased/audit")).json()["data"]  # the erasure stays provable
        assert audit[-1]["action"] == "user.erase" and "Pumpernickel" not in str(audit)
        assert len(await wait_for_memories(http, "kept-user", 1)) >= 1
    assert user_rows_outside_audit(db, "wiktoria-erased") == []
    # the audit log keeps what happened, by id, without content
    conn = sqlite3.connect(db)
    actions = [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE user_id='wiktoria-erased' ORDER BY seq")]
    assert "user.erase" in actions and "memory.write" in actions
    conn.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("salience.db*"))
    for word in (b"Pumpernickel", b"Biscuit", b"hopeless"):
        assert word not in raw


async def test_plaintext_never_reaches_the_database_file(make_proxy, upstream, tmp_path):
    proxy = make_proxy(upstream, server={"data_dir": str(tmp_path / "data")})
    async with proxy.client() as client, proxy.http() as http:
        await ask(client, "zofia", "My grandmother Eulalia grew saffron crocuses in Valencia.")
        [memory] = await wait_for_memories(http, "zofia", 1)
        assert "Eulalia" in memory["text"]  # readable through the API
        await ask(client, "zofia", "Tell me about Eulalia and her saffron crocuses.")  # a trace holds it too
    proxy.stop()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("salience.db*"))
    assert b"zofia" in raw  # the file was written (ids are not secret)
    for word in (b"Eulalia", b"saffron", b"Valencia"):
        assert word not in raw


@pytest.mark.parametrize("store_backend", STORE_BACKENDS, indirect=True)
async def test_another_tenant_gets_404_for_every_user_endpoint(make_proxy, upstream, monkeypatch):
    monkeypatch.setenv("TEST_ACME_KEY", "sk-acme-" + "9" * 24)
    proxy = make_proxy(upstream, other_tenants={"acme": {"api_keys": ["os.environ/TEST_ACME_KEY"], "debug_headers": True}})
    async with proxy.client() as client, proxy.http() as http:
        raw = await ask(client, "alice", "My sister Sarah was just diagnosed with breast cancer.")
        trace_id = raw.headers["x-salience-trace"]
        [memory] = await wait_for_memories(http, "alice", 1)
    acme = {"authorization": "Bearer sk-acme-" + "9" * 24}
    import httpx

    async with httpx.AsyncClient(base_url=proxy.url, headers=acme) as other:
        attempts = [
            ("GET", "/v1/users/alice/memories"), ("GET", f"/v1/users/alice/memories/{memory['id']}"),
            ("DELETE", f"/v1/users/alice/memories/{memory['id']}"), ("DELETE", "/v1/users/alice"),
            ("GET", "/v1/users/alice/export"), ("GET", "/v1/users/alice/audit"),
            ("POST", "/v1/users/alice/recall"), ("GET", f"/v1/traces/{trace_id}"),
        ]
        for method, path in attempts:
            response = await other.request(method, path, json={"query": "sister"} if method == "POST" else None)
            assert response.status_code == 404, (method, path, response.status_code)
            assert "Sarah" not in response.text
        # the same user name in acme is another person
        own = await other.get("/v1/users/nobody-here/memories")
        assert own.status_code == 404 and own.json()["error"]["code"] == "user_not_found"
    async with proxy.http() as http:
        assert (await http.get(f"/v1/users/alice/memories/{memory['id']}")).status_code == 200  # untouched


async def test_audit_records_ids_and_request_and_verify_names_an_edited_entry(make_proxy, upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_ADMIN_KEY", "admin-" + "a" * 30)
    proxy = make_proxy(upstream, server={"data_dir": str(tmp_path / "data"), "admin_key": "os.environ/TEST_ADMIN_KEY"})
    async with proxy.client() as client, proxy.http() as http:
        await ask(client, "maja", "My brother Tomasz lives in Gdansk with his wife.")
        [memory] = await wait_for_memories(http, "maja", 1)
        raw = await ask(client, "maja", "Where does my brother Tomasz live?")
        request_id = raw.headers["x-salience-request-id"]
        assert raw.headers["x-salience-region"] == "local"
        export = await http.get("/v1/users/maja/export")
        assert export.headers["x-salience-region"] == "local" and export.json()["region"] == "local"
        entries = (await http.get("/v1/users/maja/audit")).json()["data"]
        actions = [e["action"] for e in entries]
        assert actions[:1] == ["memory.write"] and "recall.inject" in actions and actions[-1] == "export"
        injected = next(e for e in entries if e["action"] == "recall.inject")
        assert injected["ids"] == [memory["id"]] and injected["request_id"] == request_id
        assert "Tomasz" not in str(entries)

        admin = {"authorization": "Bearer admin-" + "a" * 30}
        assert (await http.get("/v1/admin/tenants")).status_code == 401  # a tenant key is not an admin key
        tenants = (await http.get("/v1/admin/tenants", headers=admin)).json()["data"]
        assert [t["id"] for t in tenants] == ["demo"] and tenants[0]["encrypted"] is True
        verified = (await http.post("/v1/admin/audit/verify", headers=admin, json={})).json()
        assert verified["ok"] is True
    proxy.stop()

    config_dir = str(proxy.config.directory)
    env = offline_env(TEST_SALIENCE_MASTER_KEY="test-master-key-" + "0" * 32, TEST_SALIENCE_KEY="sk-test-cli-000000")

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "salience", "audit", "verify", "--config", config_dir, "--tenant", "demo"],
                              capture_output=True, text=True, timeout=120, env=env)

    good = verify()
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok" in good.stdout

    db = sqlite3.connect(tmp_path / "data" / "salience.db")
    db.execute("UPDATE audit_log SET ids='[\"mem_somethingelse\"]' WHERE tenant='demo' AND seq=2")
    db.commit()
    edited = verify()
    assert edited.returncode == 1 and "seq 2" in edited.stdout and "edited" in edited.stdout

    original = db.execute("SELECT ids FROM audit_log WHERE tenant='demo' AND seq=1").fetchone()
    db.execute("UPDATE audit_log SET ids=? WHERE tenant='demo' AND seq=2", original)  # not the original: still bad
    db.execute("DELETE FROM audit_log WHERE tenant='demo' AND seq=2")
    db.commit()
    removed = verify()
    assert removed.returncode == 1 and "seq 2" in removed.stdout and "removed" in removed.stdout
    db.close()


async def test_export_cli_writes_the_users_data(make_proxy, upstream, tmp_path):
    proxy = make_proxy(upstream, server={"data_dir": str(tmp_path / "data")})
    async with proxy.http() as http:
        await http.post("/v1/users/ola/import", json=import_five())
    proxy.stop()
    out = tmp_path / "out" / "ola.json"
    env = offline_env(TEST_SALIENCE_MASTER_KEY="test-master-key-" + "0" * 32, TEST_SALIENCE_KEY="sk-test-cli-000000")
    result = subprocess.run(
        [sys.executable, "-m", "salience", "export", "--config", str(proxy.config.directory), "--tenant", "demo",
         "--user", "ola", "--out", str(out)], capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(out.read_text())
    assert sorted(m["source_messages"][0]["content"] for m in data["memories"]) == sorted(FIVE)
    assert all(0 <= m["salience"] <= 1 and m["importance"] > 0 for m in data["memories"])
    assert data["audit"][-1]["action"] == "export" and data["region"] == "local"
    missing = subprocess.run(
        [sys.executable, "-m", "salience", "export", "--config", str(proxy.config.directory), "--user", "nobody",
         "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120, env=env,
    )
    assert missing.returncode == 1 and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("store_backend", STORE_BACKENDS, indirect=True)
async def test_retention_erases_expired_memories_with_audit_entries(make_proxy, upstream):
    proxy = make_proxy(upstream, tenant={"retention_days": 30}, server={"retention_poll_seconds": 0.2})
    async with proxy.client() as client, proxy.http() as http:
        await ask(client, "ida", "My cat Pumpernickel sleeps on my keyboard every morning.")  # said today: kept
        [recent] = await wait_for_memories(http, "ida", 1)
        await http.post("/v1/users/ida/import", json=import_five())  # said in March 2024: expired
        # each erasure is followed by its audit entry: wait for both, not just the first
        for _ in range(100):
            listed = (await http.get("/v1/users/ida/memories")).json()["data"]
            entries = (await http.get("/v1/users/ida/audit")).json()["data"]
            erased = [e for e in entries if e["action"] == "retention.erase"]
            if len(listed) == 1 and len(erased) >= 5:
                break
            await asyncio.sleep(0.1)
        assert [m["id"] for m in listed] == [recent["id"]]
        assert len(erased) == 5
        assert "Biscuit" not in str((await http.get("/v1/users/ida/export")).json())
