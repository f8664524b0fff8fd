"""Token counting with tiktoken, offline.

tiktoken downloads its encodings on first use; litellm's wheel ships the cl100k_base and
o200k_base files, so point tiktoken's cache there before the first ``get_encoding``.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import tiktoken

DEFAULT_ENCODING = "cl100k_base"


def _use_shipped_encodings() -> None:
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    spec = importlib.util.find_spec("litellm")
    if spec and spec.submodule_search_locations:
        shipped = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
        if shipped.is_dir():
            os.environ["TIKTOKEN_CACHE_DIR"] = str(shipped)


@lru_cache(maxsize=8)
def encoding_for(model: str | None) -> tiktoken.Encoding:
    """The model's encoding when tiktoken knows the model, else cl100k_base."""
    _use_shipped_encodings()
    if model:
        try:
            return tiktoken.encoding_for_model(model.rsplit("/", 1)[-1])
        except KeyError:
            pass
    return tiktoken.get_encoding(DEFAULT_ENCODING)


@lru_cache(maxsize=1024)
def count_tokens(text: str, model: str | None = None) -> int:
    """Remembered for recent texts: recall counts the same rendered block more than once (to
    pack, then with the arc note), and a block of 1,000 tokens costs ~0.3 ms to encode."""
    return len(encoding_for(model).encode(text, disallowed_special=()))
