"""Vectors one process embedded, for another process on the same machine to reuse.

The serving process embeds each turn's latest message for screening and recall. The extraction
worker, in its own process, then embeds the same text again: the offline extractor keeps a
one-sentence disclosure as it was said, and the worker screens and consolidates each candidate
by its vector. That second embedding was a third of the worker's CPU per job (5.5 of 16 ms at
10k memories, docs/performance.md), spent on a second core that slows the replies beside it,
and with a hosted embedder it is a second paid call for the same text. With extraction in the
serving process (``extraction.process: inline``) the in-process memo (``SharedEmbeddings``)
already answers it.

So the serving process writes every vector it computes into a table on shared memory, and the
worker reads a text's vector from there before it embeds it. The table is a fixed number of
slots, each holding one text's key (a hash of the embedder's name and the text: no text is
stored) and its vector; a new text takes the slot its key points to, evicting what was there.
A slot carries a checksum over key and vector: a slot being rewritten while it is read fails
the check and reads as a miss, so a reader never takes half of one vector and half of another.
A miss costs what it always did: the text is embedded.

``salience serve`` hands the table's file descriptor to the worker process it starts
(``--vectors-fd``), as it does its count of replies (``reply_gauge.py``).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct

import numpy as np

from salience.shared_memory import anonymous_file

SLOTS = 2048  # texts kept: at 64 turns a second, the last 30 s or so
WIDTH = 3072  # the widest vector kept (hosted embedders go to 3,072); a narrower one uses the start of its slot
HEADER = struct.Struct("<16s8sI4x")  # key, checksum of key and vector, the vector's length
SLOT_BYTES = -(-(HEADER.size + 4 * WIDTH) // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages: a
# 384-dimension vector touches only its slot's first page, so the table's memory follows its use


class VectorTable:
    def __init__(self, fd: int | None = None, slots: int = SLOTS) -> None:
        """A new table (the serving process), or the one behind an inherited ``fd`` (the worker)."""
        if fd is None:
            fd = anonymous_file("salience-vectors", slots * SLOT_BYTES)
        self.fd = fd
        self._memory = mmap.mmap(fd, 0)
        self.slots = len(self._memory) // SLOT_BYTES

    def put(self, space: str, text: str, vector: np.ndarray) -> None:
        """Keep ``vector``, the embedding of ``text`` by the embedder named ``space``."""
        data = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        if not self.slots or len(data) > 4 * WIDTH:
            return
        key = _key(space, text)
        start = self._slot(key)
        memory = self._memory
        memory[start + HEADER.size:start + HEADER.size + len(data)] = data
        memory[start:start + HEADER.size] = HEADER.pack(key, _checksum(key, data), len(data) // 4)

    def get(self, space: str, text: str) -> np.ndarray | None:
        """The vector kept for ``text`` by the embedder ``space``, or None."""
        if not self.slots:
            return None
        key = _key(space, text)
        start = self._slot(key)
        stored, checksum, length = HEADER.unpack_from(self._memory, start)
        if stored != key or not 0 < length <= WIDTH:
            return None
        data = self._memory[start + HEADER.size:start + HEADER.size + 4 * length]
        if _checksum(key, data) != checksum:  # rewritten while read, or never written whole
            return None
        return np.frombuffer(data, dtype=np.float32).copy()

    def _slot(self, key: bytes) -> int:
        return int.from_bytes(key[:8], "little") % self.slots * SLOT_BYTES

    def close(self) -> None:
        """Close the descriptor (the table stays mapped while this object lives)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _key(space: str, text: str) -> bytes:
    return hashlib.blake2b(f"{space}\0{text}".encode(), digest_size=16).digest()


def _checksum(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(key + data, digest_size=8).digest()
