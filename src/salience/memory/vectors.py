"""Similarity of one vector with every row of a matrix of unit vectors (a memory set's).

A 10k x 384 float32 matrix is 15 MB: the product is bound by memory bandwidth, and the
matrix is seldom still in the cache when the next turn comes. BLAS's matrix-vector product
reads it in ~1.1 ms on one core where numpy's einsum takes ~1.8 ms (measured with the cache
cold, as between turns, on the 2-core benchmark machine).
BLAS must be held to one thread in the processes that serve (``one_blas_thread``): on a
busy 2-core machine, a product split over every core waits for a core that is answering
another request (16 ms instead of 1.7 ms was measured).

The same vectors kept as int8 (``quantize``: one scale per row) are a quarter of the bytes.
numpy has no integer matrix product of its own worth the name (2.4 ms at 10k, against 0.3 for
float32 BLAS, both warm), so ``int8_similarities`` runs SimSIMD's int8 dot product
(``simsimd.cdist``), which reads the codes one row per memory, in order, with the CPU's integer
dot-product instructions (AVX-512 VNNI, AVX2). Measured after a 20 ms pause, as between two
turns, on one core of the Intel benchmark machine (docs/performance.md): 0.44 ms at 10k and
3.9 ms at 100k, against 0.87 and 6.7 ms for float32 BLAS and 2.4 and 14.2 ms for ONNX Runtime's
``MatMulInteger`` over the codes one column per memory (the kernel used before, which was the
fastest of the three on the AMD machine measured then).

The query is quantized to 7 bits (-64..64, as the embedding model's weights are,
``onnx_minilm``). The products are exact integer sums on every CPU (compared with numpy's in
the tests, extreme codes included); the scores are within about 0.004 of the float32 ones
(0.001 typically); on LoCoMo every recall figure stayed within 0.001.
"""

from __future__ import annotations

import numpy as np
import simsimd

ROW_LEVELS = 127  # int8 rows: -127..127
QUERY_LEVELS = 64  # the query: -64..64


def similarities(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix @ vector``: one dot product per row."""
    return matrix @ vector


def quantize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and one float32 scale per row: ``row ~= codes * scale``."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.size == 0:
        return np.zeros(rows.shape, dtype=np.int8), np.zeros(len(rows), dtype=np.float32)
    peak = np.abs(rows).max(axis=1)
    scales = np.where(peak > 0, peak / ROW_LEVELS, 1.0).astype(np.float32)
    codes = np.rint(rows / scales[:, None]).astype(np.int8)
    return codes, scales


def int8_similarities(codes: np.ndarray, scales: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """The similarity of ``vector`` with each memory kept as int8 ``codes`` (one C-contiguous
    row per memory) and ``scales``."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.float32)
    peak = float(np.abs(vector).max())
    step = np.float32(peak / QUERY_LEVELS if peak > 0 else 1.0)
    query = np.rint(np.asarray(vector, dtype=np.float32) / step).astype(np.int8)[None, :]
    dots = np.asarray(simsimd.cdist(query, codes, metric="dot"))[0]  # exact integers, as float64
    return dots.astype(np.float32) * (scales * step)


def one_blas_thread() -> None:
    """Hold this process's BLAS to a single thread (serving processes and the worker call it
    once at start; the request path never splits a product over cores)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
