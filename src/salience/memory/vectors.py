"""Similarity of one vector with every row of a matrix of unit vectors (a memory set's).

A 10k x 384 float32 matrix is 15 MB: the product is bound by memory bandwidth, and the
matrix is seldom still in the cache when the next turn comes. BLAS's matrix-vector product
reads it in ~1.1 ms on one core where numpy's einsum takes ~1.8 ms (measured with the cache
cold, as between turns, on the 2-core benchmark machine).
BLAS must be held to one thread in the processes that serve (``one_blas_thread``): on a
busy 2-core machine, a product split over every core waits for a core that is answering
another request (16 ms instead of 1.7 ms was measured).

The same vectors kept as int8 (``quantize``: one scale per row) are a quarter of the bytes.
numpy has no integer matrix product of its own worth the name (3.2 ms at 10k, three times
the float32 one), so ``int8_similarities`` runs ONNX Runtime's ``MatMulInteger`` kernel, in
the shape it is fastest at: the query, unsigned, as a one-row matrix times the codes laid out
one column per memory (``[dim, n]``). Measured after a 20 ms pause, as between two turns, on
one core (docs/performance.md): 0.83 ms at 10k and 4.4 ms at 100k, against 2.5 and 22.8 ms
for float32 BLAS and 1.9 and 40 ms for the codes one row per memory times the query as a
column (the layout used before).

The query is quantized to 7 bits (-64..64, as the embedding model's weights are,
``onnx_minilm``) and shifted by 64 to be unsigned (0..128); the shift is taken back out with
each column's sum of codes, kept beside it. Where the kernel multiplies unsigned by signed
bytes in 16-bit pair sums (AVX2's ``vpmaddubsw``), a sum stays within 2 x 128 x 127 = 32,512
< 32,767: no saturation, so every machine computes the exact integer dot products. The scores
are within about 0.004 of the float32 ones (0.001 typically); on LoCoMo every recall figure
stayed within 0.001.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import numpy as np

ROW_LEVELS = 127  # int8 rows: -127..127
QUERY_LEVELS = 64  # the query: -64..64, shifted to 0..128 (see the module's docstring)


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


def int8_similarities(columns: np.ndarray, sums: np.ndarray, scales: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """The similarity of ``vector`` with each of the first ``len(scales)`` memories kept as
    ``columns`` (int8 codes, ``[dim, m]``, C-contiguous, one column per memory), their column
    ``sums`` (int32) and ``scales``. Columns past ``len(scales)`` (a buffer's room to grow) are
    multiplied too and their results dropped: cheaper than copying the columns in use."""
    count = len(scales)
    if count == 0:
        return np.zeros(0, dtype=np.float32)
    peak = float(np.abs(vector).max())
    step = np.float32(peak / QUERY_LEVELS if peak > 0 else 1.0)
    shifted = (np.rint(np.asarray(vector, dtype=np.float32) / step) + QUERY_LEVELS).astype(np.uint8)[None, :]
    dots = _int8_session().run(None, {"query": shifted, "columns": columns})[0][0, :count]
    return (dots - QUERY_LEVELS * sums[:count]).astype(np.float32) * (scales * step)


@functools.cache
def int8_kernel_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


@functools.cache
def _int8_session() -> Any:
    """One ``MatMulInteger`` graph, query [1, dim] uint8 times columns [dim, n] int8, for any n
    and dim; on one thread, as BLAS is (``one_blas_thread``)."""
    import onnxruntime
    from onnx import TensorProto, helper

    from salience.memory.onnx_minilm import serving_session_options

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["query", "columns"], ["dots"])],
        "int8_similarities",
        [helper.make_tensor_value_info("query", TensorProto.UINT8, [1, "dim"]),
         helper.make_tensor_value_info("columns", TensorProto.INT8, ["dim", "n"])],
        [helper.make_tensor_value_info("dots", TensorProto.INT32, [1, "n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what opset 17 needs, and every supported ONNX Runtime reads
    options = serving_session_options(threads=1)
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def one_blas_thread() -> None:
    """Hold this process's BLAS to a single thread (serving processes and the worker call it
    once at start; the request path never splits a product over cores)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
