"""Persistence. ``Store`` is the only door to it; ``open_store`` picks the backend from a URL."""

from salience.store.base import Store, StoreUnavailable, open_store

__all__ = ["Store", "StoreUnavailable", "open_store"]
