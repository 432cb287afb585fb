"""Critic labels from a file: JSONL rows {head, relation, tail, label: accept|reject}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthkd.errors import ConfigError

ALLOWED = {"accept": True, "reject": False}


def read_labels(path: Path, where: str, phrases: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Labelled triples with `label` as a bool; ConfigError (before any call) on unknown values."""
    if not path.is_file():
        raise ConfigError(f"label file not found: {path}", where=where, fix="fix the path (relative to the pipeline file) or set labels: null")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"line {n} of {path} is not JSON", where=where, fix="one JSON object per line") from None
        missing = [k for k in ("head", "relation", "tail", "label") if k not in row]
        if missing:
            raise ConfigError(f"line {n} of {path} has no {', '.join(missing)}", where=where, fix="each line needs head, relation, tail, label")
        label = str(row["label"]).strip().lower()
        if label not in ALLOWED:
            raise ConfigError(f"line {n} of {path}: unknown label {row['label']!r}", where=where, fix="labels must be accept or reject")
        rows.append({**row, "label": ALLOWED[label], "phrase": row.get("phrase") or (phrases or {}).get(row["relation"], row["relation"])})
    return rows
