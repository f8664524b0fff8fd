"""Similarity of one vector with every row of a matrix of unit vectors (a memory set's).

A 10k x 384 float32 matrix is 15 MB: the product is bound by memory bandwidth, and the
matrix is seldom still in the cache when the next turn comes. BLAS's matrix-vector product
reads it in ~1.1 ms on one core where numpy's einsum takes ~1.8 ms (measured with the cache
cold, as between turns, on the 2-core benchmark machine).
BLAS must be held to one thread in the processes that serve (``one_blas_thread``): on a
busy 2-core machine, a product split over every core waits for a core that is answering
another request (16 ms instead of 1.7 ms was measured).

The same rows kept as int8 (``quantize``: one scale per row) are a quarter of the bytes.
numpy has no integer matrix product of its own worth the name (3.2 ms at 10k, three times
the float32 one), so ``int8_similarities`` runs ONNX Runtime's ``MatMulInteger`` kernel on
them: 0.68-1.23 against 1.22-1.55 ms at 10k and 5.8-12.7 against 12.2-14.3 ms at 100k with
the cache cold, as between two turns of a user, the ratio varying with the machine's load (with
the rows still in the cache, 0.6 against 0.3 ms at 10k; docs/performance.md). The query is quantized to 7 bits, as the embedding model's weights are
(``onnx_minilm``): where the kernel multiplies the rows, made unsigned, by the query in 16-bit
pair sums (AVX2), a sum cannot saturate (2 x 255 x 64 < 32,767), so every machine computes the
exact integer dot products. The scores are within about 0.004 of the float32 ones (0.001
typically); on LoCoMo every recall figure stayed within 0.001.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import numpy as np

ROW_LEVELS = 127  # int8 rows: -127..127
QUERY_LEVELS = 64  # the query: -64..64 (see the module's docstring)


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
    """The similarity of ``vector`` with every row kept as ``codes`` and ``scales``."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.float32)
    peak = float(np.abs(vector).max())
    step = np.float32(peak / QUERY_LEVELS if peak > 0 else 1.0)
    query = np.rint(np.asarray(vector, dtype=np.float32) / step).astype(np.int8)[:, None]
    dots = _int8_session().run(None, {"rows": codes, "query": query})[0][:, 0]
    return dots.astype(np.float32) * (scales * step)


@functools.cache
def int8_kernel_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


@functools.cache
def _int8_session() -> Any:
    """One ``MatMulInteger`` graph, rows [n, dim] int8 times query [dim, 1] int8, for any n and
    dim; on one thread, as BLAS is (``one_blas_thread``)."""
    import onnxruntime
    from onnx import TensorProto, helper

    from salience.memory.onnx_minilm import serving_session_options

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["rows", "query"], ["dots"])],
        "int8_similarities",
        [helper.make_tensor_value_info("rows", TensorProto.INT8, ["n", "dim"]),
         helper.make_tensor_value_info("query", TensorProto.INT8, ["dim", 1])],
        [helper.make_tensor_value_info("dots", TensorProto.INT32, ["n", 1])],
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
