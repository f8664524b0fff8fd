"""A memory set's embedding rows, shared with the sets that follow it (``memory_set.py``)."""

from __future__ import annotations

import numpy as np


class RowBuffer:
    """The embedding rows of a user's memory sets, with room to grow: a set one turn newer
    appends its memories' rows after the ones it shares with the set it replaces, instead of
    copying all of them (15 MB at 10k). Each set reads only its own first rows, so the set it
    replaces, perhaps still scoring a query, sees nothing change."""

    def __init__(self, rows: np.ndarray) -> None:
        self.array = rows
        self.filled = len(rows)

    def first(self, count: int) -> np.ndarray:
        return self.array[:count]

    def extended(self, count: int, fresh: np.ndarray) -> "RowBuffer":
        """The buffer holding these ``count`` rows and then ``fresh``: this one when nothing was
        appended after row ``count`` yet and there is room, else a larger copy."""
        end = count + len(fresh)
        if self.filled == count and end <= len(self.array) and self.array.shape[1:] == fresh.shape[1:]:
            self.array[count:end] = fresh
            self.filled = end
            return self
        rows = self.array[:count].reshape(count, fresh.shape[1])
        grown = np.empty((max(end, int(end * 1.25) + 64), fresh.shape[1]), dtype=np.float32)
        grown[:count], grown[count:end] = rows, fresh
        buffer = RowBuffer(grown)
        buffer.filled = end
        return buffer
