"""`load`: read records from JSONL, JSON, parquet, a `datasets` directory, or a directory of such files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from synthkd.config.stages import StageBase
from synthkd.errors import ConfigError
from synthkd.hashing import digest, file_digest
from synthkd.stages.base import CheckContext, RunInputs, StageImpl, StageResult

if TYPE_CHECKING:
    from synthkd.config.loader import LoadedPipeline


class LoadStage(StageBase):
    """Read records from JSONL, JSON, parquet or a `datasets` directory."""

    type: Literal["load"]

    path: str = Field(..., description="File or directory, relative to the pipeline file.")
    columns: dict[str, str] = Field(default_factory=dict, description="Rename columns: {source: target}.")
    id_column: str | None = Field(None, description="Column holding a stable record id (default: row number).")
    limit: int | None = Field(None, ge=1, description="Keep only the first N records.")

FORMATS = (".jsonl", ".json", ".parquet")
_FORMS_FIX = "use .jsonl (one JSON object a line), .json (a list of objects, or columns {\"col\": [...]}), .parquet, " \
             "a directory saved by datasets' save_to_disk, or a directory of such files"


def read_records(path: Path, where: str) -> list[dict[str, Any]]:
    """All rows of a local data file or directory, as dicts.

    A directory is a `datasets` save (save_to_disk), or else a directory of .jsonl/.json/.parquet
    shards, read in name order.
    """
    if not path.exists():
        raise ConfigError(f"data not found: {path}", where=where, fix="fix the path (in a pipeline file, paths are relative to that file)")
    if not path.is_dir():
        return _read_file(path, where)
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return _read_saved(path, where)
    shards = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in FORMATS)
    if not shards:
        raise ConfigError(f"{path} is neither a saved `datasets` dataset nor a directory of {'/'.join(FORMATS)} files",
                          where=where, fix=_FORMS_FIX)
    return [row for shard in shards for row in _read_file(shard, where)]


def _read_saved(path: Path, where: str) -> list[dict[str, Any]]:
    """The rows of a directory written by `save_to_disk` (one split)."""
    from datasets import Dataset, load_from_disk

    try:
        data = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 (datasets/pyarrow raise many types for a damaged directory)
        raise ConfigError(f"cannot read the saved dataset {path}: {type(exc).__name__}: {exc}".split("\n")[0],
                          where=where, fix="save it again with save_to_disk, or point at a .jsonl file") from None
    if not isinstance(data, Dataset):  # a DatasetDict: several splits
        splits = ", ".join(data)
        raise ConfigError(f"{path} holds several splits ({splits}), not one dataset", where=where,
                          fix=f"point path at one split's directory, e.g. {path.name}/{next(iter(data), 'train')}")
    return [dict(r) for r in data]


def _read_file(path: Path, where: str) -> list[dict[str, Any]]:
    if path.suffix not in FORMATS:
        raise ConfigError(f"unsupported data format: {path.suffix or '(no suffix)'} ({path.name})", where=where, fix=_FORMS_FIX)
    if path.suffix == ".parquet":
        from datasets import Dataset

        try:
            return [dict(r) for r in Dataset.from_parquet(str(path))]
        except Exception as exc:  # noqa: BLE001 (pyarrow's errors for a file that is not parquet vary)
            raise ConfigError(f"cannot read {path} as parquet: {type(exc).__name__}: {exc}".split("\n")[0], where=where,
                              fix="check the file is parquet") from None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", where=where, fix="make it readable") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM (as some Windows tools write) is not part of the data
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} is invalid", where=f"{path}:{line}",
                          fix=f"save the file as UTF-8, e.g. iconv -f <encoding> -t UTF-8 (read by {where})") from None
    if path.suffix == ".json":
        try:
            return _json_rows(json.loads(text), path, where)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":
                raise ConfigError(f"invalid JSON: {exc.msg}", where=f"{path}:{exc.lineno}", fix=f"fix that line (read by {where})") from None
            # Several values: JSON lines under a .json name, as datasets' to_json writes them.
    return _jsonl_rows(text, path, where)


def _jsonl_rows(text: str, path: Path, where: str) -> list[dict[str, Any]]:
    """One object per line; a line that is not one names its file:line."""
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON at column {exc.colno}: {exc.msg}", where=f"{path}:{number}",
                              fix=f"fix or remove that line (read by {where})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"the line is a JSON {_kind(row)}, not an object", where=f"{path}:{number}",
                              fix=f'write one object a line, e.g. {{"instruction": ...}} (read by {where})')
        rows.append(row)
    return rows


def _json_rows(data: Any, path: Path, where: str) -> list[dict[str, Any]]:
    """A .json file's rows: a list of objects, {"data": [...]}, or column layout {"col": [values...], ...}."""
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {k: len(v) for k, v in data.items()}
        if len(set(lengths.values())) != 1:
            raise ConfigError(f"{path} has columns of different lengths: "
                              + ", ".join(f"{k}: {n}" for k, n in lengths.items()), where=where, fix="make every column as long")
        return [dict(zip(data, values)) for values in zip(*data.values())]
    if not isinstance(data, list):
        raise ConfigError(f"{path} holds a JSON {_kind(data)}, not rows", where=where, fix=_FORMS_FIX)
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise ConfigError(f"item {i} of {path} is a JSON {_kind(row)}, not an object", where=where, fix=_FORMS_FIX)
    return data


def _kind(value: Any) -> str:
    """What JSON calls a value's type."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _text_columns(rows: list[dict[str, Any]]) -> None:
    """A column holding values of several kinds (numbers among strings in `gold`, as real data often has;
    a list in one row and a number in another) becomes text throughout, each value as its JSON text:
    the datasets library cannot store a column of mixed types."""
    kinds: dict[str, set[str]] = {}
    for row in rows:
        for k, v in row.items():
            if v is not None:
                kinds.setdefault(k, set()).add(_KINDS.get(type(v), "other"))
    mixed = [k for k, found in kinds.items() if len(found) > 1]
    for row in rows:
        for k in mixed:
            if row.get(k) is not None and not isinstance(row[k], str):
                row[k] = json.dumps(row[k], ensure_ascii=False, default=str)


_KINDS = {str: "text", int: "number", float: "number", bool: "boolean", list: "list", dict: "object"}


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
    _text_columns(out)
    return out


def columns_of(cfg: LoadStage, path: Path, where: str) -> set[str]:
    """Columns the stage will produce (any row's), read from the data itself (no network)."""
    rows = load_rows(cfg, path, where)
    return set().union(*(r.keys() for r in rows)) if rows else {"id"}


def data_files(path: Path) -> list[Path]:
    """The files a load stage's output depends on: the file, or every file under the directory (name order)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []


class LoadImpl(StageImpl[LoadStage]):
    """Reads a file; its rows keep the file's columns (renamed as configured) plus `id`."""

    def output_columns(self, inputs: dict[str, set[str]], ctx: CheckContext) -> set[str]:
        return columns_of(self.cfg, ctx.loaded.resolve(self.cfg.path), ctx.where("path"))

    def source_identity(self, loaded: LoadedPipeline) -> str:
        # The data's content, not its path or mtime: a dataset saved again into the same directory
        # (or a file edited within one mtime tick) is new input, and a touched file is not.
        path = loaded.resolve(self.cfg.path)
        return digest([[str(p.relative_to(path)) if p != path else "", file_digest(p)] for p in data_files(path)])

    async def run(self, inp: RunInputs) -> StageResult:
        return StageResult(rows=load_rows(self.cfg, inp.rt.pipeline.resolve(self.cfg.path), f"stages.{self.cfg.name}.path"))
