"""A memory set's embedding rows, shared with the sets that follow it (``memory_set.py``)."""

from __future__ import annotations

import numpy as np

from salience.memory.vectors import int8_kernel_available, int8_similarities, quantize, similarities


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
        grown = np.empty((max(end, int(end * 1.25) + 64), *fresh.shape[1:]), dtype=fresh.dtype)
        grown[:count], grown[count:end] = rows, fresh
        buffer = RowBuffer(grown)
        buffer.filled = end
        return buffer


class Rows:
    """One memory set's embeddings (its first ``count`` rows of shared buffers), scored against
    a query vector.

    ``quantized``: kept as int8 with one scale per row and scored by an integer kernel
    (``vectors.int8_similarities``): a quarter of the bytes, so less time than the float32
    product when the rows are not in the CPU's cache, as between two turns; scores within about
    0.004 of the float32 ones. The serving process keeps its sets this way; the extraction
    worker, which decides reinforcements on a similarity threshold, keeps float32."""

    def __init__(self, codes: RowBuffer, scales: RowBuffer | None, count: int) -> None:
        self._codes = codes
        self._scales = scales  # None: float32 rows
        self.count = count

    @classmethod
    def of(cls, vectors: np.ndarray, quantized: bool = False) -> "Rows":
        """``vectors``: float32, one row per memory."""
        if quantized and int8_kernel_available():
            codes, scales = quantize(vectors)
            return cls(RowBuffer(codes), RowBuffer(scales), len(vectors))
        return cls(RowBuffer(vectors.astype(np.float32, copy=False)), None, len(vectors))

    @property
    def quantized(self) -> bool:
        return self._scales is not None

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """The similarity of ``vector`` (unit length) with every row."""
        codes = self._codes.first(self.count)
        if self._scales is None:
            return similarities(codes, vector)
        return int8_similarities(codes, self._scales.first(self.count), vector)

    @property
    def dim(self) -> int:
        return int(self._codes.array.shape[1]) if self._codes.array.ndim == 2 else 0

    def vector(self, index: int) -> np.ndarray:
        """One row as float32."""
        row = self._codes.array[index]
        if self._scales is None:
            return row
        return row.astype(np.float32) * self._scales.array[index]

    @property
    def matrix(self) -> np.ndarray:
        """Every row as float32: the rows themselves, or a dequantized copy."""
        codes = self._codes.first(self.count)
        if self._scales is None:
            return codes
        return codes.astype(np.float32) * self._scales.first(self.count)[:, None]

    def taken(self, kept: np.ndarray) -> "Rows":
        """A copy holding only the ``kept`` rows, in that order."""
        scales = None if self._scales is None else RowBuffer(self._scales.first(self.count)[kept])
        return Rows(RowBuffer(self._codes.first(self.count)[kept]), scales, len(kept))

    def extended(self, fresh: np.ndarray) -> "Rows":
        """These rows and then ``fresh`` (float32), sharing the buffers where nothing was
        appended after them yet."""
        if self._scales is None:
            return Rows(self._codes.extended(self.count, fresh.astype(np.float32, copy=False)), None, self.count + len(fresh))
        codes, scales = quantize(fresh)
        return Rows(self._codes.extended(self.count, codes), self._scales.extended(self.count, scales),
                    self.count + len(fresh))
