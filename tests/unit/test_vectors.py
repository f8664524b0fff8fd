"""Recall's memory rows kept as int8: scores close to float32's, the same best matches, the exact
integer sums on every CPU, and a quarter of the memory."""

from __future__ import annotations

import numpy as np

from salience.memory.rows import Rows
from salience.memory.vectors import QUERY_LEVELS, int8_similarities, quantize


def unit_rows(count: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_int8_scores_stay_within_a_few_thousandths_of_float32_and_rank_alike():
    rows = unit_rows(5000)
    queries = unit_rows(20, seed=1)
    # queries near some rows, as a turn is near the memories it is about
    queries[10:] = rows[:10] + 0.3 * queries[10:]
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    codes, scales = quantize(rows)
    for query in queries:
        exact, approximate = rows @ query, int8_similarities(codes, scales, query)
        assert approximate.dtype == np.float32
        assert np.abs(approximate - exact).max() < 0.006
        best = set(np.argsort(-exact)[:20].tolist())
        assert len(best & set(np.argsort(-approximate)[:20].tolist())) >= 18


def test_the_integer_kernel_gives_the_exact_integer_dot_products():
    # exact on every CPU (no saturating pair sums): the same scores on every machine
    rows = unit_rows(3000, seed=2)
    codes, scales = quantize(rows)
    assert np.abs(codes.astype(np.int32)).max() <= 127
    query = unit_rows(1, seed=3)[0]
    step = float(np.abs(query).max()) / QUERY_LEVELS
    query_codes = np.rint(query / step).astype(np.int32)
    assert np.abs(query_codes).max() <= QUERY_LEVELS
    exact_sums = codes.astype(np.int32) @ query_codes
    similarity = int8_similarities(codes, scales, query)
    assert similarity.shape == (3000,) and similarity.dtype == np.float32
    np.testing.assert_allclose(similarity, exact_sums * scales * np.float32(step), rtol=1e-6)
    # the extreme codes: every product at its bound, alternating and all of one sign
    extreme = np.where(np.arange(codes.shape[1]) % 2, 127, -127).astype(np.int8)[None, :].repeat(3, axis=0)
    extreme[1], extreme[2] = 127, -127
    high = np.sign(query).astype(np.float32)  # every query code at +-64
    high_codes = np.rint(high * QUERY_LEVELS).astype(np.int32)
    expected = (extreme.astype(np.int32) @ high_codes) * np.float32(1 / QUERY_LEVELS)
    got = int8_similarities(extreme, np.ones(3, np.float32), high)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert abs(got[1]) == 127 * abs(int(high_codes.sum())) / QUERY_LEVELS


def test_quantized_rows_take_a_quarter_of_the_memory_and_grow_like_float_rows():
    first, more = unit_rows(1000, seed=4), unit_rows(10, seed=5)
    float_rows, int8_rows = Rows.of(first), Rows.of(first, quantized=True)
    assert int8_rows.quantized and not float_rows.quantized
    assert int8_rows._vectors.array.nbytes * 4 == float_rows._vectors.array.nbytes
    query = unit_rows(1, seed=6)[0]
    grown = int8_rows.extended(more)
    assert grown.count == 1010 and int8_rows.count == 1000  # the set it grew from is unchanged
    both = np.concatenate([first, more])
    assert np.abs(grown.scores(query) - both @ query).max() < 0.006
    assert np.abs(grown.matrix - both).max() < 0.01
    again = int8_rows.extended(more[:3])  # the grown buffer has rows past 1000 already: copied
    assert again.count == 1003 and np.array_equal(again.scores(query), grown.scores(query)[:1003])
    assert np.array_equal(grown.scores(query), Rows.of(both, quantized=True).scores(query))
    kept = np.array([0, 7, 1003])
    taken = grown.taken(kept)
    assert np.array_equal(taken.scores(query), grown.scores(query)[kept])
    empty = Rows.of(np.zeros((0, 0), np.float32), quantized=True)
    assert empty.scores(query).shape == (0,)
    assert empty.extended(more).scores(query).shape == (10,)


def test_float32_rows_score_exactly_and_grow_in_place():
    # the extraction worker's rows: its reinforcement threshold reads exact similarities
    rows = unit_rows(500, seed=7)
    kept = Rows.of(rows)
    query = unit_rows(1, seed=8)[0]
    assert not kept.quantized
    assert np.array_equal(kept.scores(query), rows @ query)
    grown = kept.extended(unit_rows(3, seed=9))
    assert np.array_equal(grown.matrix[:500], rows) and grown.count == 503 and kept.count == 500
