"""Configuration: the server file and one file per tenant, validated at start-up.

    config/salience.yaml          server-wide settings
    config/tenants/<tenant>.yaml  one tenant each; the file name is the tenant id

Secrets are never literal: a value written ``os.environ/NAME`` is read from the
environment here, and only here. An unset variable reads as "not configured".
A bad file stops the server with the file, the field and the reason.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_REFERENCE = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ConfigError(Exception):
    """A configuration file is missing or invalid; the message names file, field and reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)


LOCAL_EMBEDDING_MODELS = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
STORE_SCHEMES = ("sqlite:///", "redis://", "rediss://")
REGION = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_REGION = "local"


class EmbedderSettings(_Strict):
    provider: Literal["local", "litellm"] = "local"
    model: str = "all-MiniLM-L6-v2"
    api_base: str | None = None
    api_key: str | None = None
    batch_size: int = Field(64, ge=1, le=4096)
    # local only: "auto" runs ONNX Runtime when installed (~3 ms a query), else torch (~10 ms);
    # "onnx-int8": the same weights quantised, about twice as fast (docs/performance.md)
    runtime: Literal["auto", "onnx", "onnx-int8", "torch"] = "auto"

    @model_validator(mode="after")
    def _local_model_is_shipped(self) -> "EmbedderSettings":
        if self.provider == "local" and self.model not in LOCAL_EMBEDDING_MODELS:
            raise ValueError(f"the local embedder ships all-MiniLM-L6-v2 only, not {self.model!r}")
        return self


class LLMExtractionSettings(_Strict):
    """The LLM extractor (memory/llm_extract.py), through litellm; off unless configured."""

    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeout_seconds: float = Field(30.0, gt=0, le=600)


class ExtractionSettings(_Strict):
    # How long a worker holds a job before another worker (or this one, restarted) may take
    # it over: longer than the slowest extraction, short enough that a crash is soon repaired.
    lease_seconds: float = Field(120.0, ge=1, le=86_400)
    llm: LLMExtractionSettings | None = None  # None: the offline extractor
    # false: exchanges are still queued (durably) but this process runs no extraction worker
    enabled: bool = True
    # where ``salience serve`` runs its worker: "separate" (default) in a child process it
    # supervises (``salience worker``), so extraction never holds the serving process's GIL;
    # "inline" in the serving process itself
    process: Literal["inline", "separate"] = "separate"
    # After a turn is queued the worker waits this long before it claims, so that the turns
    # queued meanwhile are claimed and extracted as one batch (docs/performance.md).
    gather_seconds: float = Field(0.3, ge=0, le=10)


class WebhookDeliverySettings(_Strict):
    """How the escalation outbox is drained: retries with exponential backoff."""

    timeout_seconds: float = Field(5.0, gt=0, le=60)
    retry_base_seconds: float = Field(5.0, gt=0)
    retry_max_seconds: float = Field(3600.0, gt=0)
    max_attempts: int = Field(20, ge=1, le=1000)
    poll_seconds: float = Field(2.0, gt=0)


class ServerSettings(_Strict):
    listen: Listen = Listen()
    data_dir: Path = Path(".salience")
    store_url: str | None = None
    embedder: EmbedderSettings = EmbedderSettings()
    extraction: ExtractionSettings = ExtractionSettings()
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    webhooks: WebhookDeliverySettings = WebhookDeliverySettings()
    # Operator endpoints (/v1/admin/...): off while unset. ``os.environ/SALIENCE_ADMIN_KEY``.
    admin_key: str | None = Field(None, min_length=16)
    # Data residency: region name -> store URL. The store of ``store_url`` (or the data_dir's
    # SQLite file) is the region ``local`` unless ``local`` is named here.
    regions: dict[str, str] = {}
    # How often tenants' retention_days are enforced (expired memories erased).
    retention_poll_seconds: float = Field(3600.0, gt=0)

    @field_validator("regions")
    @classmethod
    def _region_stores_are_supported(cls, regions: dict[str, str]) -> dict[str, str]:
        for name, url in regions.items():
            if not REGION.match(name):
                raise ValueError(f"{name!r} is not a region name ([a-z0-9_-])")
            if not isinstance(url, str) or not url.startswith(STORE_SCHEMES):
                raise ValueError(f"region {name!r}: use sqlite:///path or redis://host:port/db")
        return regions

    def region_store_url(self, region: str) -> str | None:
        if region in self.regions:
            return self.regions[region]
        return self.resolved_store_url if region == DEFAULT_REGION else None

    @field_validator("store_url")
    @classmethod
    def _store_is_supported(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(STORE_SCHEMES):
            raise ValueError(f"unsupported store URL {url.split(':', 1)[0]!r}: use sqlite:///path or redis://host:port/db")
        return url

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'salience.db'}"


class UpstreamSettings(_Strict):
    """Where completions go. With neither model nor api_base, the built-in echo upstream answers."""

    model: str | None = None
    api_base: str | None = None
    api_key: str | None = None
    # relay: OpenAI wire format, reply bytes forwarded untouched. litellm: any provider
    # litellm supports, reply re-encoded as OpenAI JSON. auto: relay for OpenAI-compatible
    # upstreams, litellm for the rest.
    transport: Literal["auto", "relay", "litellm", "echo"] = "auto"
    timeout_seconds: float = Field(60.0, gt=0)
    extra_headers: dict[str, str] = {}

    @model_validator(mode="after")
    def _transport_has_what_it_needs(self) -> "UpstreamSettings":
        if self.transport == "relay" and not self.api_base:
            raise ValueError("transport relay needs api_base (the upstream's OpenAI-compatible /v1 URL)")
        if self.transport == "litellm" and not self.model:
            raise ValueError("transport litellm needs model (e.g. anthropic/claude-sonnet-4-5)")
        return self

    @property
    def resolved_transport(self) -> Literal["relay", "litellm", "echo"]:
        if self.transport != "auto":
            return self.transport
        if not self.model and not self.api_base:
            return "echo"
        provider = (self.model or "").split("/", 1)[0] if "/" in (self.model or "") else "openai"
        if self.api_base and provider in {"openai", "hosted_vllm", "openai_compatible"}:
            return "relay"
        if not self.model:
            return "relay"
        return "litellm"

    @property
    def upstream_model_name(self) -> str | None:
        """The model name as the upstream itself knows it (provider prefix removed for relay)."""
        if self.model and self.resolved_transport == "relay" and "/" in self.model:
            prefix, rest = self.model.split("/", 1)
            if prefix in {"openai", "hosted_vllm", "openai_compatible"}:
                return rest
        return self.model


class MemorySettings(_Strict):
    budget_tokens: int = Field(600, ge=0, le=100_000)
    half_life_days: float = Field(30.0, gt=0)
    session_gap_minutes: float = Field(30.0, gt=0)
    min_relevance: float = Field(0.05, ge=0, le=1)  # below this a memory is never injected
    max_items: int = Field(100, ge=1, le=1000)


SeverityName = Literal["concern", "risk", "imminent"]
LOCALE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z]{2}|[-_][0-9]{3})?$")


class CrisisResourceSettings(_Strict):
    """One crisis line or directory, as shown to the model (and so to the user)."""

    name: str = Field(min_length=1, max_length=120)
    contact: str = Field(min_length=1, max_length=200)
    url: str | None = Field(None, max_length=300)


class SecondOpinionSettings(_Strict):
    """An LLM classifier through litellm, consulted besides the offline detector."""

    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeout_seconds: float = Field(3.0, gt=0, le=30)
    # flagged: only messages the offline detector flagged (confirms, may raise severity or add
    # categories; adds latency only to those). always: every message (better recall, slower).
    when: Literal["flagged", "always"] = "flagged"


class SafetySettings(_Strict):
    locale: str = "en-US"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    escalation_threshold: SeverityName = "risk"
    include_message_text: bool = False
    # A YAML file in the format of config/resources/crisis_lines.yaml, relative to the
    # config directory; replaces the shipped one. ``resources`` replaces the locale's list.
    resources_file: str | None = None
    resources: list[CrisisResourceSettings] | None = None
    # An escalation episode ends after this long without a message at or above the threshold.
    episode_quiet_hours: float = Field(72.0, gt=0)
    second_opinion: SecondOpinionSettings | None = None

    @field_validator("locale")
    @classmethod
    def _locale_is_a_tag(cls, locale: str) -> str:
        if not LOCALE.match(locale):
            raise ValueError(f"{locale!r} is not a locale tag like en-US or en-GB")
        return locale

    @model_validator(mode="after")
    def _webhook_is_complete(self) -> "SafetySettings":
        if self.webhook_url is not None:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ValueError("webhook_url must be an http:// or https:// URL")
            if not self.webhook_secret:
                raise ValueError("webhook_url needs webhook_secret (events are signed with it)")
            if len(self.webhook_secret) < 16:
                raise ValueError("webhook_secret must be at least 16 characters")
        return self

    @property
    def escalation_enabled(self) -> bool:
        return self.webhook_url is not None


class TenantSettings(_Strict):
    id: str
    api_keys: list[str] = []
    upstream: UpstreamSettings = UpstreamSettings()
    memory: MemorySettings = MemorySettings()
    safety: SafetySettings = SafetySettings()
    # Where this tenant's data lives: a region of salience.yaml ``regions`` (or ``local``, the
    # default store). Named in the X-Salience-Region header and in exports. ``data_region`` is
    # the older name of the same setting.
    region: str = DEFAULT_REGION
    data_region: str | None = None
    # Encryption at rest: the key that wraps this tenant's per-user data keys, from the
    # environment (e.g. os.environ/SALIENCE_DEMO_MASTER_KEY). Unset: stored unencrypted, with a
    # warning at start-up (a development setup; see docs/compliance.md).
    master_key: str | None = Field(None, min_length=32)
    debug_headers: bool = False
    retention_days: float | None = Field(None, gt=0)

    @field_validator("api_keys")
    @classmethod
    def _keys_are_long_enough(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if len(key) < 8:
                raise ValueError("an API key must be at least 8 characters")
        return keys

    @model_validator(mode="after")
    def _data_region_is_region(self) -> "TenantSettings":
        if self.data_region is not None and self.region == DEFAULT_REGION:
            object.__setattr__(self, "region", self.data_region)
        return self

    @property
    def api_key_hashes(self) -> list[bytes]:
        return [hash_api_key(key) for key in self.api_keys]


class Config(BaseModel):
    """Everything the server needs, resolved and validated."""

    model_config = ConfigDict(frozen=True)

    directory: Path
    server: ServerSettings
    tenants: dict[str, TenantSettings]


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def resolve_env_references(value: Any) -> Any:
    """Replace every ``os.environ/NAME`` string with the variable's value (None when unset)."""
    if isinstance(value, str):
        match = ENV_REFERENCE.match(value.strip())
        if match:
            return os.environ.get(match.group(1)) or None
        return value
    if isinstance(value, list):
        resolved = [resolve_env_references(v) for v in value]
        return [v for v in resolved if v is not None]
    if isinstance(value, dict):
        return {k: resolve_env_references(v) for k, v in value.items()}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _explain(path: Path, exc: ValidationError) -> ConfigError:
    reasons = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(file)"
        reasons.append(f"{path}: {field}: {error['msg']}")
    return ConfigError("\n".join(reasons))


def load_config(directory: str | Path) -> Config:
    """Read and validate ``salience.yaml`` and ``tenants/*.yaml`` below ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: configuration directory not found")

    server_file = directory / "salience.yaml"
    raw_server = _read_yaml(server_file) if server_file.exists() else {}
    raw_server = resolve_env_references(raw_server)
    if os.environ.get("SALIENCE_DATA_DIR"):
        raw_server["data_dir"] = os.environ["SALIENCE_DATA_DIR"]
    if os.environ.get("SALIENCE_STORE_URL"):
        raw_server["store_url"] = os.environ["SALIENCE_STORE_URL"]
    try:
        server = ServerSettings.model_validate(raw_server)
    except ValidationError as exc:
        raise _explain(server_file, exc) from None

    tenants: dict[str, TenantSettings] = {}
    owners: dict[bytes, str] = {}
    for tenant_file in sorted((directory / "tenants").glob("*.yaml")):
        tenant_id = tenant_file.stem
        if not TENANT_ID.match(tenant_id):
            raise ConfigError(f"{tenant_file}: the file name must be a tenant id ([a-z0-9_-])")
        raw = resolve_env_references(_read_yaml(tenant_file))
        try:
            tenant = TenantSettings.model_validate({**raw, "id": tenant_id})
        except ValidationError as exc:
            raise _explain(tenant_file, exc) from None
        for key_hash in tenant.api_key_hashes:
            if key_hash in owners:
                raise ConfigError(f"{tenant_file}: api_keys: a key is also used by tenant {owners[key_hash]!r}")
            owners[key_hash] = tenant_id
        tenants[tenant_id] = tenant
    if not tenants:
        raise ConfigError(f"{directory / 'tenants'}: no tenant files (*.yaml) found")
    for tenant in tenants.values():
        if server.region_store_url(tenant.region) is None:
            known = ", ".join(sorted({DEFAULT_REGION, *server.regions}))
            raise ConfigError(
                f"{directory / 'tenants' / (tenant.id + '.yaml')}: region: tenant {tenant.id!r} is in region "
                f"{tenant.region!r}, which has no store in {server_file} (regions configured: {known})"
            )
    from salience.safety.policy import build_policy  # here, not at the top: the policy module imports this one

    for tenant in tenants.values():
        build_policy(tenant, directory)  # a missing or malformed crisis resources file stops start-up
    return Config(directory=directory, server=server, tenants=tenants)
