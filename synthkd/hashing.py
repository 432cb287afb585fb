"""Stable hashes: of JSON-able values (stage and step fingerprints) and of files' bytes (input data, GGUF models).
Standard library only, so code that fingerprints (validate, the load stage, model conversion) stays light."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any


def digest(obj: Any) -> str:
    """Short stable hash of any JSON-able object (fingerprints of stages and steps)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks; computed once per process for an unchanged file."""
    st = path.stat()
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
