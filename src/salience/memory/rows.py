"""A memory set's embeddings, in buffers shared with the sets that follow it (``memory_set.py``)."""

from __future__ import annotations

import numpy as np

from salience.memory.vectors import int8_kernel_available, int8_similarities, quantize, similarities


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


class ColumnBuffer:
    """``RowBuffer``'s int8 counterpart, one column per memory (``[dim, room]``): the layout the
    integer kernel reads fastest (``vectors.int8_similarities``). Columns not filled yet are
    zeros; the kernel runs over them and their results are dropped."""

    def __init__(self, columns: np.ndarray, filled: int) -> None:
        self.array = columns
        self.filled = filled

    @classmethod
    def of(cls, codes: np.ndarray) -> "ColumnBuffer":
        """``codes``: int8, one row per memory."""
        return cls(np.ascontiguousarray(codes.T), len(codes))

    def extended(self, count: int, fresh: np.ndarray) -> "ColumnBuffer":
        """These ``count`` columns and then ``fresh`` (int8, one row per memory): written in place
        when nothing was appended after column ``count`` yet and there is room, else copied."""
        end = count + len(fresh)
        if self.filled == count and end <= self.array.shape[1] and self.array.shape[0] == fresh.shape[1]:
            self.array[:, count:end] = fresh.T
            self.filled = end
            return self
        grown = np.zeros((fresh.shape[1], room_for(end)), dtype=np.int8)
        if count:
            grown[:, :count] = self.array[:, :count]
        grown[:, count:end] = fresh.T
        return ColumnBuffer(grown, end)


class Rows:
    """One memory set's embeddings (the first ``count`` of shared buffers), scored against a
    query vector.

    ``quantized``: kept as int8 with one scale per memory, one column per memory, and scored by
    an integer kernel (``vectors.int8_similarities``): a quarter of the bytes and a third of the
    time of the float32 product at 10k (a fifth at 100k), with scores within about 0.004 of the
    float32 ones. The serving process keeps its sets this way; the extraction worker, which
    decides reinforcements on a similarity threshold, keeps float32."""

    def __init__(
        self, vectors: RowBuffer | ColumnBuffer, count: int, scales: RowBuffer | None = None, sums: RowBuffer | None = None
    ) -> None:
        self._vectors = vectors  # float32 rows, or int8 columns with their scales and column sums
        self._scales = scales
        self._sums = sums
        self.count = count

    @classmethod
    def of(cls, vectors: np.ndarray, quantized: bool = False) -> "Rows":
        """``vectors``: float32, one row per memory."""
        if quantized and int8_kernel_available():
            codes, scales = quantize(vectors)
            return cls(ColumnBuffer.of(codes), len(vectors), RowBuffer(scales), RowBuffer(column_sums(codes)))
        return cls(RowBuffer(vectors.astype(np.float32, copy=False)), len(vectors))

    @property
    def quantized(self) -> bool:
        return self._scales is not None

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """The similarity of ``vector`` (unit length) with every memory."""
        if self._scales is None or self._sums is None:
            return similarities(self._vectors.array[: self.count], vector)
        return int8_similarities(self._vectors.array, self._sums.first(self.count), self._scales.first(self.count), vector)

    @property
    def dim(self) -> int:
        array = self._vectors.array
        return 0 if array.ndim != 2 else int(array.shape[0] if self.quantized else array.shape[1])

    @property
    def matrix(self) -> np.ndarray:
        """Every memory's vector as float32, one row each: the rows themselves, or a dequantized copy."""
        if self._scales is None:
            return self._vectors.array[: self.count]
        return self._vectors.array[:, : self.count].T.astype(np.float32) * self._scales.first(self.count)[:, None]

    def taken(self, kept: np.ndarray) -> "Rows":
        """A copy holding only the ``kept`` memories, in that order."""
        if self._scales is None or self._sums is None:
            return Rows(RowBuffer(self._vectors.array[: self.count][kept]), len(kept))
        codes = self._vectors.array[:, : self.count][:, kept]
        return Rows(ColumnBuffer(np.ascontiguousarray(codes), len(kept)), len(kept),
                    RowBuffer(self._scales.first(self.count)[kept]), RowBuffer(self._sums.first(self.count)[kept]))

    def extended(self, fresh: np.ndarray) -> "Rows":
        """These memories and then ``fresh`` (float32, one row each), sharing the buffers where
        nothing was appended after them yet."""
        count, end = self.count, self.count + len(fresh)
        if self._scales is None or self._sums is None:
            return Rows(self._vectors.extended(count, fresh.astype(np.float32, copy=False)), end)
        codes, scales = quantize(fresh)
        return Rows(self._vectors.extended(count, codes), end,
                    self._scales.extended(count, scales), self._sums.extended(count, column_sums(codes)))


def column_sums(codes: np.ndarray) -> np.ndarray:
    """Each memory's sum of int8 codes, which takes the query's shift back out of its dot product."""
    return codes.sum(axis=1, dtype=np.int32) if codes.size else np.zeros(len(codes), dtype=np.int32)
