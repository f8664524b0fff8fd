"""Similarity of one vector with every row of a matrix of unit vectors (a memory set's).

A 10k x 384 float32 matrix is 15 MB: the product is bound by memory bandwidth, and the
matrix is seldom still in the cache when the next turn comes. BLAS's matrix-vector product
reads it in ~1.1 ms on one core where numpy's einsum takes ~1.8 ms (measured with the cache
cold, as between turns, on the 2-core benchmark machine).
BLAS must be held to one thread in the processes that serve (``one_blas_thread``): on a
busy 2-core machine, a product split over every core waits for a core that is answering
another request (16 ms instead of 1.7 ms was measured).
"""

from __future__ import annotations

import numpy as np


def similarities(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix @ vector``: one dot product per row."""
    return matrix @ vector


def one_blas_thread() -> None:
    """Hold this process's BLAS to a single thread (serving processes and the worker call it
    once at start; the request path never splits a product over cores)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
