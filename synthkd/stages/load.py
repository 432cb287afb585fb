"""`load`: read records from JSONL, JSON, parquet or a `datasets` directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthkd.config.loader import LoadedPipeline
from synthkd.config.stages import LoadStage
from synthkd.errors import ConfigError
from synthkd.jsonl import read_jsonl
from synthkd.runtime import digest
from synthkd.stages.base import CheckContext, RunInputs, StageImpl, StageResult


def read_records(path: Path, where: str) -> list[dict[str, Any]]:
    """All rows of a local data file or `datasets` directory, as dicts."""
    if not path.exists():
        raise ConfigError(f"data not found: {path}", where=where, fix="fix the path (it is relative to the pipeline file)")
    try:
        if path.is_dir():
            from datasets import load_from_disk

            return [dict(r) for r in load_from_disk(str(path))]
        if path.suffix == ".jsonl":
            return read_jsonl(path)
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            return list(data) if isinstance(data, list) else list(data.get("data", []))
        if path.suffix == ".parquet":
            from datasets import Dataset

            return [dict(r) for r in Dataset.from_parquet(str(path))]
    except (json.JSONDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", where=where, fix="check the file is valid JSONL/JSON/parquet") from None
    raise ConfigError(f"unsupported data format: {path.suffix}", where=where, fix="use .jsonl, .json, .parquet or a datasets directory")


def load_rows(cfg: LoadStage, path: Path, where: str) -> list[dict[str, Any]]:
    """Rows with renamed columns and a string `id` on each."""
    rows = read_records(path, where)
    if cfg.limit is not None:
        rows = rows[: cfg.limit]
    out = []
    for i, row in enumerate(rows):
        row = {cfg.columns.get(k, k): v for k, v in row.items()}
        if cfg.id_column:
            if cfg.id_column not in row:
                raise ConfigError(f"row {i} has no column {cfg.id_column!r}", where=where, fix="fix id_column or the data")
            row["id"] = str(row[cfg.id_column])
        else:
            row["id"] = str(row.get("id", i))
        out.append(row)
    return out


def columns_of(cfg: LoadStage, path: Path, where: str) -> set[str]:
    """Columns the stage will produce, read from the data itself (no network)."""
    rows = load_rows(cfg, path, where)
    return set().union(*(r.keys() for r in rows[:50])) if rows else {"id"}


class LoadImpl(StageImpl[LoadStage]):
    """Reads a file; its rows keep the file's columns (renamed as configured) plus `id`."""

    def output_columns(self, inputs: dict[str, set[str]], ctx: CheckContext) -> set[str]:
        return columns_of(self.cfg, ctx.loaded.resolve(self.cfg.path), ctx.where("path"))

    def source_identity(self, loaded: LoadedPipeline) -> str:
        path = loaded.resolve(self.cfg.path)
        return digest([str(path), path.stat().st_size, path.stat().st_mtime_ns]) if path.is_file() else str(path)

    async def run(self, inp: RunInputs) -> StageResult:
        return StageResult(rows=load_rows(self.cfg, inp.rt.pipeline.resolve(self.cfg.path), f"stages.{self.cfg.name}.path"))
