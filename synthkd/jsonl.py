"""JSON Lines written so that any reader splits them into the same rows.

`json.dumps(..., ensure_ascii=False)` leaves U+0085, U+2028 and U+2029 raw inside strings, and
`str.splitlines()` (plus many JSON-lines readers in other languages) treats each as a line break,
so a teacher answer holding one would split its row in two for whoever reads the dataset next.
Rows are written with those characters escaped (still valid JSON, same value when parsed) and
read by splitting on "\\n" only, which no JSON encoder emits inside a value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

# Characters other than "\n" that str.splitlines() breaks on and json.dumps may leave raw
# (the C0 ones are already escaped by json, listed so the guarantee does not rest on that).
_BREAKS = {c: f"\\u{ord(c):04x}" for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
_ESCAPE = str.maketrans(_BREAKS)


def dumps_line(obj: Any, **kwargs: Any) -> str:
    """One JSON line (without its "\\n"): readable UTF-8, but no character any reader splits on."""
    return json.dumps(obj, ensure_ascii=False, **kwargs).translate(_ESCAPE)


def split_lines(text: str) -> list[str]:
    """The non-blank lines of a JSON-lines text, split on "\\n" only."""
    return [line for line in text.split("\n") if line.strip()]


def read_jsonl(path: Path | str) -> list[Any]:
    """All rows of a JSON-lines file."""
    return [json.loads(line) for line in split_lines(Path(path).read_text(encoding="utf-8"))]


def write_jsonl(path: Path | str, rows: Iterable[Any], **kwargs: Any) -> None:
    """Rows as JSON lines (UTF-8), one per row, each ending in "\\n"."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(dumps_line(row, **kwargs) + "\n")
