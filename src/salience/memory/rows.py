"""A memory set's embeddings, in buffers shared with the sets that follow it (``memory_set.py``)."""

from __future__ import annotations

import numpy as np

from salience.memory.vectors import int8_similarities, quantize, similarities


def room_for(count: int) -> int:
    """The size a buffer grows to for ``count`` rows: a quarter more, so appends seldom copy."""
    return max(count, int(count * 1.25) + 64)


class RowBuffer:
    """The rows of a user's memory sets, with room to grow: a set one turn newer appends its
    memories' rows after the ones it shares with the set it replaces, instead of copying all of
    them (15 MB at 10k in float32). Each set reads only its own first rows, so the set it
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
        fits = self.array.shape[1:] == fresh.shape[1:] and self.array.dtype == fresh.dtype
        if self.filled == count and end <= len(self.array) and fits:
            self.array[count:end] = fresh
            self.filled = end
            return self
        rows = self.array[:count].reshape(count, *fresh.shape[1:])
        grown = np.zeros((room_for(end), *fresh.shape[1:]), dtype=fresh.dtype)
        grown[:count], grown[count:end] = rows, fresh
        buffer = RowBuffer(grown)
        buffer.filled = end
        return buffer


class Rows:
    """One memory set's embeddings (the first ``count`` rows of shared buffers), scored against
    a query vector.

    ``quantized``: kept as int8 with one scale per memory and scored by an integer kernel
    (``vectors.int8_similarities``): a quarter of the bytes and half the time of the float32
    product at 10k and 100k, with scores within about 0.004 of the float32 ones. The serving
    process keeps its sets this way; the extraction worker, which decides reinforcements on a
    similarity threshold, keeps float32."""

    def __init__(self, vectors: RowBuffer, count: int, scales: RowBuffer | None = None) -> None:
        self._vectors = vectors  # float32 rows, or int8 codes with their ``scales``
        self._scales = scales
        self.count = count

    @classmethod
    def of(cls, vectors: np.ndarray, quantized: bool = False) -> "Rows":
        """``vectors``: float32, one row per memory."""
        if quantized:
            codes, scales = quantize(vectors)
            return cls(RowBuffer(codes), len(vectors), RowBuffer(scales))
        return cls(RowBuffer(vectors.astype(np.float32, copy=False)), len(vectors))

    @property
    def quantized(self) -> bool:
        return self._scales is not None

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """The similarity of ``vector`` (unit length) with every memory."""
        rows = self._vectors.first(self.count)
        if self._scales is None:
            return similarities(rows, vector)
        return int8_similarities(rows, self._scales.first(self.count), vector)

    @property
    def dim(self) -> int:
        array = self._vectors.array
        return 0 if array.ndim != 2 else int(array.shape[1])

    @property
    def matrix(self) -> np.ndarray:
        """Every memory's vector as float32, one row each: the rows themselves, or a dequantized copy."""
        rows = self._vectors.first(self.count)
        if self._scales is None:
            return rows
        return rows.astype(np.float32) * self._scales.first(self.count)[:, None]

    def taken(self, kept: np.ndarray) -> "Rows":
        """A copy holding only the ``kept`` memories, in that order."""
        rows = RowBuffer(self._vectors.first(self.count)[kept])
        return Rows(rows, len(kept), None if self._scales is None else RowBuffer(self._scales.first(self.count)[kept]))

    def extended(self, fresh: np.ndarray) -> "Rows":
        """These memories and then ``fresh`` (float32, one row each), sharing the buffers where
        nothing was appended after them yet."""
        count, end = self.count, self.count + len(fresh)
        if self._scales is None:
            return Rows(self._vectors.extended(count, fresh.astype(np.float32, copy=False)), end)
        codes, scales = quantize(fresh)
        return Rows(self._vectors.extended(count, codes), end, self._scales.extended(count, scales))
