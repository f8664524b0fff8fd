"""The long-lived parts of a running salience, built once from the config."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta

from salience.memory.embed import Embedder, build_embedder
from salience.memory.extract import Extractor, SelfDisclosureExtractor
from salience.memory.recall import Recaller
from salience.safety.escalate import EscalationSender
from salience.safety.redact import WithoutDisclosures
from salience.safety.screen import SafetyService
from salience.settings import Config, TenantSettings, hash_api_key
from salience.spool import ExchangeSpool, SpoolReplayer
from salience.store.base import Store, StoreUnavailable, open_store
from salience.upstream import Upstream, build_upstream
from salience.worker import ExtractionWorker

log = logging.getLogger("salience")


class TenantDirectory:
    """Finds the tenant an API key belongs to, comparing key hashes in constant time."""

    def __init__(self, tenants: dict[str, TenantSettings]) -> None:
        self.tenants = tenants
        self._hashes = [(key_hash, tenant) for tenant in tenants.values() for key_hash in tenant.api_key_hashes]

    def by_api_key(self, api_key: str) -> TenantSettings | None:
        presented = hash_api_key(api_key)
        found = None
        for key_hash, tenant in self._hashes:  # no early exit: every comparison is made
            if hmac.compare_digest(presented, key_hash):
                found = tenant
        return found


@dataclass
class Services:
    config: Config
    store: Store
    embedder: Embedder
    extractor: Extractor
    recaller: Recaller
    worker: ExtractionWorker
    upstreams: dict[str, Upstream]
    tenants: TenantDirectory
    spool: ExchangeSpool
    replayer: SpoolReplayer
    safety: SafetyService
    escalations: EscalationSender

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        store: Store | None = None,
        embedder: Embedder | None = None,
        extractor: Extractor | None = None,
        upstreams: dict[str, Upstream] | None = None,
    ) -> "Services":
        store = store or open_store(config.server.resolved_store_url)
        embedder = embedder or build_embedder(config.server.embedder)
        extractor = WithoutDisclosures(extractor or SelfDisclosureExtractor())
        upstreams = upstreams or {tid: build_upstream(t.upstream) for tid, t in config.tenants.items()}
        spool = ExchangeSpool(config.server.data_dir / "spool")
        return cls(
            config=config,
            store=store,
            embedder=embedder,
            extractor=extractor,
            recaller=Recaller(store, embedder),
            worker=ExtractionWorker(
                store, extractor, embedder, lease=timedelta(seconds=config.server.extraction.lease_seconds)
            ),
            upstreams=upstreams,
            tenants=TenantDirectory(config.tenants),
            spool=spool,
            replayer=SpoolReplayer(spool, store, config.tenants),
            safety=SafetyService.build(config, store),
            escalations=EscalationSender(store, config.tenants, config.server.webhooks),
        )

    async def start(self, run_worker: bool = True) -> None:
        try:
            await self.store.open()
        except StoreUnavailable:
            # A network store may be down while we start: serve in pass-through until it answers.
            log.warning("store unreachable at start-up: completions are served without memory until it answers")
        if run_worker:
            if self.config.server.extraction.enabled:  # off: exchanges queue up for another process
                self.worker.start()
            self.replayer.start(on_queued=self.worker.notify)
            self.escalations.start()

    async def stop(self) -> None:
        await self.replayer.stop()
        await self.worker.stop()
        await self.escalations.stop()
        for upstream in self.upstreams.values():
            await upstream.aclose()
        await self.store.close()
