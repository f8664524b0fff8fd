"""Compliance: erasure with receipts, export, the hash-chained audit log, encryption at rest,
residency and retention. See docs/compliance.md."""
