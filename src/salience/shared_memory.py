"""Memory the serving process shares with the extraction worker process it starts: a file that no
path names, whose descriptor the child inherits (its count of replies, ``reply_gauge.py``, and
the vectors it embedded, ``memory/vector_table.py``)."""

from __future__ import annotations

import os
import tempfile


def anonymous_file(name: str, size: int) -> int:
    """A descriptor for ``size`` bytes of zeroes in memory (pages exist once written to)."""
    if hasattr(os, "memfd_create"):  # Linux
        fd = os.memfd_create(name)
    else:
        fd, path = tempfile.mkstemp(prefix=f"{name}-")
        os.unlink(path)
    os.ftruncate(fd, size)
    return fd
