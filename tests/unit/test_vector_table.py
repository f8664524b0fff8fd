"""The vectors the serving process embedded, read by the extraction worker process instead of
embedding the same text again (``memory/vector_table.py``)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from salience.memory.vector_table import HEADER, WIDTH, VectorTable


def unit(dim: int, seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_another_process_reads_the_vector_exactly_and_only_for_the_same_text_and_embedder():
    table = VectorTable()
    vector = unit(384, 1)
    table.put("all-MiniLM-L6-v2", "My sister Sarah starts chemo on Monday.", vector)
    read = (
        "import sys, numpy as np; from salience.memory.vector_table import VectorTable\n"
        f"table = VectorTable({table.fd})\n"
        "found = table.get('all-MiniLM-L6-v2', 'My sister Sarah starts chemo on Monday.')\n"
        "sys.stdout.buffer.write(found.tobytes())\n"
        "assert table.get('all-MiniLM-L6-v2', 'My sister Sarah starts chemo on Tuesday.') is None\n"
        "assert table.get('text-embedding-3-small', 'My sister Sarah starts chemo on Monday.') is None\n"
    )
    child = subprocess.run([sys.executable, "-c", read], pass_fds=(table.fd,), capture_output=True, check=True)
    assert np.frombuffer(child.stdout, dtype=np.float32).tobytes() == vector.tobytes()
    table.close()


def test_a_slot_read_while_it_is_rewritten_is_a_miss_not_a_wrong_vector():
    table = VectorTable(slots=1)
    table.put("m", "I started a new job.", unit(384, 2))
    memory = table._memory
    # a writer that has written half of the next text's vector into the slot, not yet its key
    memory[HEADER.size:HEADER.size + 768] = unit(384, 3).tobytes()[:768]
    assert table.get("m", "I started a new job.") is None
    table.put("m", "I started a new job.", unit(384, 2))
    assert np.array_equal(table.get("m", "I started a new job."), unit(384, 2))


def test_a_new_text_takes_the_slot_of_an_old_one():
    table = VectorTable(slots=1)
    table.put("m", "first", unit(8, 4))
    table.put("m", "second", unit(8, 5))
    assert table.get("m", "first") is None
    assert np.array_equal(table.get("m", "second"), unit(8, 5))


def test_vectors_of_every_common_width_are_kept_and_wider_ones_are_not():
    table = VectorTable(slots=8)
    for dim in (384, 768, 1536, WIDTH):
        table.put("m", f"text {dim}", unit(dim, dim))
        assert np.array_equal(table.get("m", f"text {dim}"), unit(dim, dim))
    table.put("m", "too wide", unit(WIDTH + 1, 0))
    assert table.get("m", "too wide") is None
