"""Encryption at rest: AES-256-GCM per user, each user's data key wrapped by a tenant master key.

    master key  from the environment (tenant ``master_key: os.environ/NAME``), at least 32
                characters; HKDF-SHA256 turns it into the 256-bit key-wrapping key
    data key    random, one per user, stored only wrapped (AES-GCM under the master key, bound
                to the tenant); erasing the user deletes it, so any copy of their ciphertext
                (a backup, a replica) can no longer be read: crypto-shredding
    a field     ``enc1:`` + base64(nonce || ciphertext+tag), the associated data binding it to
                its tenant, user and field, so a value moved to another user or field fails

The store calls this for every text field (memory text and speaker, message content and name,
queued jobs' messages, traces); embeddings are stored as they are (docs/compliance.md says
what they reveal). The store-outage spool (``spool.py``) is sealed too, under a per-tenant key
derived from the master key, since the users' data keys live in the store that is down.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from salience.settings import Config

PREFIX = "enc1:"
WRAP_PREFIX = b"w1"
NONCE = 12
MIN_MASTER_KEY_CHARS = 32


class DecryptionError(Exception):
    """A value could not be opened: wrong key, wrong owner, or tampered with."""


def _wrapping_key(master_key: str, tenant: str, purpose: str = "") -> bytes:
    info = f"tenant:{tenant}" + (f":{purpose}" if purpose else "")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"salience master key", info=info.encode()).derive(
        master_key.encode()
    )


class TenantKeyring:
    """The ``FieldCipher`` of ``store/base.py``: holds the tenants' key-wrapping keys."""

    def __init__(self, master_keys: dict[str, str]) -> None:
        self._wrapping = {tenant: AESGCM(_wrapping_key(key, tenant)) for tenant, key in master_keys.items()}
        # a separate key per purpose: the spool's records never share a key with wrapped data keys
        self._spool = {tenant: _wrapping_key(key, tenant, "spool") for tenant, key in master_keys.items()}

    @classmethod
    def from_config(cls, config: Config) -> "TenantKeyring":
        return cls({tid: t.master_key for tid, t in config.tenants.items() if t.master_key})

    def encrypts(self, tenant: str) -> bool:
        return tenant in self._wrapping

    def new_wrapped_key(self, tenant: str) -> bytes:
        nonce = os.urandom(NONCE)
        return WRAP_PREFIX + nonce + self._wrapping[tenant].encrypt(nonce, AESGCM.generate_key(256), tenant.encode())

    def unwrap(self, tenant: str, wrapped: bytes) -> bytes:
        if not wrapped.startswith(WRAP_PREFIX):
            raise DecryptionError("not a wrapped data key")
        body = wrapped[len(WRAP_PREFIX):]
        try:
            return self._wrapping[tenant].decrypt(body[:NONCE], body[NONCE:], tenant.encode())
        except Exception as exc:
            raise DecryptionError("the data key does not open with this tenant's master key") from exc

    def spool_key(self, tenant: str) -> bytes | None:
        """The tenant's key for spooled exchanges (None: the tenant is stored in clear)."""
        return self._spool.get(tenant)

    def seal(self, key: bytes, plaintext: str, context: str) -> str:
        nonce = os.urandom(NONCE)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, key: bytes, token: str, context: str) -> str:
        raw = base64.b64decode(token[len(PREFIX):])
        try:
            return AESGCM(key).decrypt(raw[:NONCE], raw[NONCE:], context.encode()).decode()
        except Exception as exc:
            raise DecryptionError("a stored value does not open with its owner's key") from exc
