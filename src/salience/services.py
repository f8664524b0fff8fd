"""The long-lived parts of a running salience, built once from the config."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from salience.compliance.audit import Auditor
from salience.compliance.crypto import TenantKeyring
from salience.compliance.retention import RetentionSweeper
from salience.memory.embed import Embedder, build_embedder
from salience.memory.extract import Extractor, SelfDisclosureExtractor
from salience.memory.recall import Recaller
from salience.memory.shared_embeddings import SharedEmbeddings
from salience.memory.vector_table import VectorTable
from salience.model import ExtractionJob, MemoryItem, UserRef
from salience.safety.escalate import EscalationSender
from salience.safety.hybrid import build_detector
from salience.safety.redact import WithoutDisclosures
from salience.safety.screen import SafetyService
from salience.settings import Config, TenantSettings, hash_api_key
from salience.spool import ExchangeSpool, SpoolReplayer
from salience.store.base import Store, StoreUnavailable, open_store
from salience.store.routed import RoutedStore
from salience.upstream import Upstream, build_upstream
from salience.worker import ExtractionWorker
from salience.reply_gauge import ReplyGauge
from salience.worker_process import ExtractionProcess

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


def open_region_stores(config: Config) -> Store:
    """One store per region a tenant uses (settings.load_config has checked each has one); a
    single region is that store itself, several are routed by tenant (``store/routed.py``)."""
    cipher = TenantKeyring.from_config(config)
    region_of = {tid: tenant.region for tid, tenant in config.tenants.items()}
    urls = {region: config.server.region_store_url(region) for region in sorted(set(region_of.values()))}
    if len(urls) == 1:
        [url] = urls.values()
        return open_store(url, cipher)  # type: ignore[arg-type]
    return RoutedStore({region: open_store(url, cipher) for region, url in urls.items()}, region_of)  # type: ignore[arg-type]


def build_extractor(config: Config) -> Extractor:
    """The LLM extractor when ``extraction.llm`` is configured, else the offline one."""
    settings = config.server.extraction.llm
    if settings is None:
        return SelfDisclosureExtractor()
    from salience.memory.llm_extract import LLMExtractor  # imports litellm: only when configured

    return LLMExtractor(settings)


@dataclass
class Services:
    config: Config
    store: Store
    embedder: SharedEmbeddings
    extractor: Extractor
    recaller: Recaller
    worker: ExtractionWorker
    upstreams: dict[str, Upstream]
    tenants: TenantDirectory
    spool: ExchangeSpool
    replayer: SpoolReplayer
    safety: SafetyService
    escalations: EscalationSender
    auditor: Auditor
    retention: RetentionSweeper
    # the replies being prepared, which the extraction worker holds back for (reply_gauge.py)
    replies: ReplyGauge
    # extraction in a child process (``extraction.process: separate``), set by ``start``
    extraction_process: ExtractionProcess | None = None
    # who hears of each committed extraction job: this process's recall caches by default; in
    # the worker process, the pipe to the serving process (``worker_process.py``)
    announce_commit: Callable[[UserRef], None] | None = None

    def store_for(self, tenant: str) -> Store:
        """The store holding ``tenant``'s data (its region's, when there are several)."""
        return self.store.of(tenant) if isinstance(self.store, RoutedStore) else self.store

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        store: Store | None = None,
        embedder: Embedder | None = None,
        extractor: Extractor | None = None,
        upstreams: dict[str, Upstream] | None = None,
        replies: ReplyGauge | None = None,
        vectors: VectorTable | None = None,
    ) -> "Services":
        """``replies`` and ``vectors``: the serving process's gauge and vector table, in the
        worker process it starts; else a new gauge, and a table once a worker process starts."""
        store = store or open_region_stores(config)
        replies = replies or ReplyGauge()
        # one embedding of a message for safety screening and recall (see shared_embeddings.py)
        embedder = SharedEmbeddings(embedder or build_embedder(config.server.embedder), table=vectors)
        detector = build_detector(embedder)
        extractor = WithoutDisclosures(extractor or build_extractor(config), detector)
        upstreams = upstreams or {tid: build_upstream(t.upstream) for tid, t in config.tenants.items()}
        spool = ExchangeSpool(config.server.data_dir / "spool", TenantKeyring.from_config(config))
        auditor = Auditor(lambda tenant: store)  # type: ignore[arg-type]
        recaller = Recaller(store, embedder, until_no_replies=replies.until_no_replies)
        services = cls(
            config=config,
            store=store,
            embedder=embedder,
            extractor=extractor,
            recaller=recaller,
            worker=ExtractionWorker(
                store, extractor, embedder, lease=timedelta(seconds=config.server.extraction.lease_seconds),
                gather_seconds=config.server.extraction.gather_seconds, hold_back=replies.hold_back,
            ),
            upstreams=upstreams,
            tenants=TenantDirectory(config.tenants),
            spool=spool,
            replayer=SpoolReplayer(spool, store, config.tenants),
            safety=SafetyService.build(config, store, detector),
            escalations=EscalationSender(store, config.tenants, config.server.webhooks),
            auditor=auditor,
            retention=RetentionSweeper(
                lambda tenant: store, config.tenants, auditor, recaller.forget, config.server.retention_poll_seconds
            ),
            replies=replies,
        )
        services.wire_commits()
        return services

    def wire_commits(self) -> None:
        """Writes and escalations are recorded in the tenant's audit chain (ids only), and the
        user of each committed job is announced (``announce_commit``)."""
        auditor = self.auditor

        def announce(user: UserRef) -> None:
            (self.announce_commit or self.recaller.refresh)(user)

        async def committed(job: ExtractionJob, added: list[MemoryItem], reinforced: list[MemoryItem]) -> None:
            if added:
                await auditor.record_quietly(job.user.tenant, job.user.user, "memory.write", [m.id for m in added], job.id)
            if reinforced:
                await auditor.record_quietly(
                    job.user.tenant, job.user.user, "memory.reinforce", [m.id for m in reinforced], job.id
                )

        async def escalated(user: UserRef, event_ids: list[str]) -> None:
            await auditor.record_quietly(user.tenant, user.user, "safety.escalation", event_ids)

        self.worker.on_commit = committed
        self.worker.on_user_committed = announce
        self.safety.on_escalation = escalated

    async def start(self, run_worker: bool = True, extraction_process: ExtractionProcess | None = None) -> None:
        """Open the store and, with ``run_worker``, start the background loops; extraction runs
        in ``extraction_process`` when one is given (``salience serve``), else in this process."""
        for tenant in self.config.tenants.values():
            if not tenant.master_key:
                log.warning("tenant %s has no master_key: its data is stored unencrypted", tenant.id)
        try:
            await self.store.open()
        except StoreUnavailable:
            # A network store may be down while we start: serve in pass-through until it answers.
            log.warning("store unreachable at start-up: completions are served without memory until it answers")
        if run_worker:
            if self.config.server.extraction.enabled:  # off: exchanges queue up for another process
                if extraction_process is not None:
                    self.extraction_process = extraction_process
                    extraction_process.on_commit = self.recaller.refresh
                    extraction_process.replies_fd = self.replies.fd
                    extraction_process.replies_wake_fd = self.replies.wake_fd
                    # the worker reads the vectors of the turns it extracts instead of embedding them again
                    self.embedder.table = self.embedder.table or VectorTable()
                    extraction_process.vectors_fd = self.embedder.table.fd
                    self.worker.elsewhere = extraction_process.notify
                    extraction_process.start()
                else:
                    self.worker.start()
            self.replayer.start(on_queued=self.worker.notify)
            self.escalations.start()
            self.retention.start()

    async def stop(self) -> None:
        await self.replayer.stop()
        await self.worker.stop()
        if self.extraction_process is not None:
            await self.extraction_process.stop()
        await self.escalations.stop()
        await self.retention.stop()
        for upstream in self.upstreams.values():
            await upstream.aclose()
        await self.store.close()
        self.replies.close()
        if self.embedder.table is not None:
            self.embedder.table.close()
