from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import pytest
import yaml
from openai import AsyncOpenAI

from salience.app import create_app
from salience.memory.embed import LocalMiniLMEmbedder
from salience.memory.extract import Extractor
from salience.services import Services
from salience.settings import Config, load_config
from salience.store.base import Store, open_store
from tests.fake_upstream import FakeUpstream
from tests.redis_server import RedisServer
from tests.servers import ServerThread

STORE_BACKENDS = ["sqlite", "redis"]


@pytest.fixture(scope="session")
def embedder() -> LocalMiniLMEmbedder:
    """The real default embedder, loaded once for the whole run (it takes seconds)."""
    model = LocalMiniLMEmbedder()
    model.load()
    return model


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the run, started only when a test asks for Redis."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """The store backend under test: "sqlite" unless a test parametrizes it (indirectly) with STORE_BACKENDS."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(params=STORE_BACKENDS)
async def each_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, empty store of each backend in turn: a test that takes it runs on both."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        url = server.url
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def store_url(store_backend: str, request: pytest.FixtureRequest) -> str | None:
    """The store URL for the backend under test; None means the default SQLite file."""
    if store_backend == "sqlite":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    return server.url


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    with ServerThread(fake.app()) as server:
        fake.url = server.url + "/v1"
        yield fake


@dataclass
class Proxy:
    url: str
    api_key: str
    config: Config
    services: Services
    server: ServerThread

    def stop(self) -> None:
        """Shut this salience down (lifespan included), as a restart would."""
        self.server.__exit__(None, None, None)

    def client(self, **kwargs: Any) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.url + "/v1", api_key=kwargs.pop("api_key", self.api_key), max_retries=0, **kwargs)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"authorization": f"Bearer {self.api_key}"}, timeout=60)


def write_config(directory: Path, tenants: dict[str, dict[str, Any]], server: dict[str, Any] | None = None) -> Path:
    (directory / "tenants").mkdir(parents=True, exist_ok=True)
    (directory / "salience.yaml").write_text(yaml.safe_dump({"data_dir": str(directory / "data"), **(server or {})}))
    for name, settings in tenants.items():
        (directory / "tenants" / f"{name}.yaml").write_text(yaml.safe_dump(settings))
    return directory


@pytest.fixture
def make_proxy(
    tmp_path: Path, embedder: LocalMiniLMEmbedder, monkeypatch: pytest.MonkeyPatch, store_url: str | None
) -> Iterator[Callable[..., Proxy]]:
    """Start salience for real (uvicorn on a free port) from YAML files written for the test.

    The store is the backend under test (``store_backend``); several proxies started in one
    test share it when it is Redis, as replicas do."""
    running: list[ServerThread] = []

    def start(
        upstream: FakeUpstream | None = None,
        extractor: Extractor | None = None,
        tenant: dict[str, Any] | None = None,
        memory: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        other_tenants: dict[str, dict[str, Any]] | None = None,
    ) -> Proxy:
        """``server`` settings go into salience.yaml (e.g. a shared ``data_dir`` to restart on);
        ``other_tenants`` are more tenant files beside ``demo``. Data is encrypted at rest with a
        test master key, as in production."""
        api_key = "sk-test-" + secrets.token_hex(12)
        monkeypatch.setenv("TEST_SALIENCE_KEY", api_key)
        monkeypatch.setenv("TEST_SALIENCE_MASTER_KEY", "test-master-key-" + "0" * 32)
        upstream_settings: dict[str, Any] = {"transport": "echo"}
        if upstream is not None:
            upstream_settings = {"api_base": upstream.url, "api_key": "os.environ/TEST_UPSTREAM_KEY", "timeout_seconds": 5}
            monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-upstream-secret")
        settings: dict[str, Any] = {
            "api_keys": ["os.environ/TEST_SALIENCE_KEY"],
            "upstream": upstream_settings,
            "debug_headers": True,
            "memory": {"budget_tokens": 400, **(memory or {})},
            "master_key": "os.environ/TEST_SALIENCE_MASTER_KEY",
        }
        for key, value in (tenant or {}).items():
            if isinstance(value, dict) and isinstance(settings.get(key), dict):
                settings[key] = {**settings[key], **value}
            else:
                settings[key] = value
        server_settings = {**({"store_url": store_url} if store_url else {}), **(server or {})}
        config = load_config(
            write_config(tmp_path / f"config{len(running)}", {"demo": settings, **(other_tenants or {})}, server_settings)
        )
        services = Services.build(config, embedder=embedder, extractor=extractor)
        thread = ServerThread(create_app(config, services)).__enter__()
        running.append(thread)
        return Proxy(thread.url, api_key, config, services, thread)

    yield start
    for thread in running:
        thread.__exit__(None, None, None)
