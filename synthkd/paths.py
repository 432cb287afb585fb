"""Paths synthkd writes, replaces or deletes: always strictly inside the directory that owns them."""

from __future__ import annotations

from pathlib import Path

from synthkd.errors import SynthkdError


class UnsafePathError(SynthkdError):
    """A name would put a path synthkd writes or deletes outside the directory it owns."""

    exit_code = 2


def inside(base: Path, *parts: str) -> Path:
    """`base/parts...`, refused unless it lies strictly below `base` (no "..", ".", absolute or empty parts).

    Checked on the resolved paths too, so a symlink inside `base` cannot lead a deletion elsewhere.
    """
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise UnsafePathError(f"{part!r} cannot name a directory inside {base}",
                                  fix="use a name of letters, digits, _ . - that is not '.' or '..'")
    path = base.joinpath(*parts)
    root = base.resolve()
    if root not in path.resolve().parents:
        raise UnsafePathError(f"{path} leads outside {base}", fix="remove the link or rename the stage")
    return path
