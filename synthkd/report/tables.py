"""The report's tables: run.json read into typed models (`readers`), then into rows of text."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from synthkd.errors import ConfigError
from synthkd.records import StageStats
from synthkd.report.readers import RunJson, _num

FIX = "pass a directory written by `synthkd run`"
STAGE_COLS = ["stage", "type", "status", "records in", "records out", "failed", "calls",
              "cache hits", "retries", "tokens", "cost", "elapsed"]
EP_KEYS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "cost")


def _load(run_dir: Path) -> RunJson:
    """run.json, typed, or ConfigError saying what is wrong with it."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise ConfigError(f"no run.json in {run_dir}", where=str(path), fix=FIX)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"run.json cannot be read: {exc}", where=str(path), fix=FIX) from exc
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise ConfigError('run.json has no "stages" object', where=str(path), fix=FIX)
    return RunJson.model_validate(data)


def _fmt(value: Any, spec: str = ",.0f", prefix: str = "") -> str:
    """A number as prefix + spec; '–' for None; anything else as text."""
    n = _num(value)
    return f"{prefix}{n:{spec}}" if n is not None else "–" if value is None else str(value)


def _usd(value: Any) -> str:
    """Dollars with four decimals."""
    return _fmt(value, ",.4f", "$")


def _slug(name: str) -> str:
    """A file-name-safe, collision-resistant prefix for a stage's plots."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "stage"
    return slug if slug == name else f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def _header_rows(run: RunJson) -> list[list[str]]:
    """Field/value rows for the run as a whole."""
    rows = [["pipeline", run.pipeline if run.pipeline is not None else "?"], ["status", run.status if run.status is not None else "?"],
            ["invocations", _fmt(run.invocations)], ["total spend", _usd(run.spent_usd_total)]]
    rows += [[k, v] for k, v in (("started", run.started), ("updated", run.updated)) if v is not None]
    this = run.this_invocation
    if this is not None and this.model_fields_set:  # an empty block says nothing
        rows.append(["this invocation", f"{_fmt(this.calls)} calls, {_fmt(this.cache_hits)} cache hits, {_usd(this.cost_usd)}"])
    return rows


def _stage_rows(stages: list[tuple[str, StageStats]]) -> list[list[str]]:
    """One row per stage, columns as in STAGE_COLS."""
    rows = []
    for name, s in stages:
        toks = [t for t in (_num(s.prompt_tokens), _num(s.completion_tokens)) if t is not None]
        elapsed = _num(s.elapsed_s)
        rows.append([name, s.type if s.type is not None else "?", s.status if s.status is not None else "?",
                     _fmt(s.records_in), _fmt(s.records_out), _fmt(s.failed), _fmt(s.calls), _fmt(s.cache_hits),
                     _fmt(s.retries), _fmt(sum(toks)) if toks else "–", _usd(s.cost_usd),
                     "–" if elapsed is None else f"{elapsed:,.1f} s"])
    return rows


def _failure_rows(stages: list[tuple[str, StageStats]]) -> list[list[str]]:
    """(stage, reason, count) rows, most frequent first; "none" for a stage without failures."""
    rows = []
    for name, s in stages:
        fails = sorted(s.failures.items(), key=lambda kv: -kv[1])
        rows += [[name, reason, _fmt(count)] for reason, count in fails] or [[name, "none", ""]]
    return rows


def _endpoint_rows(stages: list[tuple[str, StageStats]]) -> list[list[str]]:
    """Per-endpoint usage summed over all stages."""
    totals: dict[str, dict[str, float]] = {}
    for _, s in stages:
        for ep, usage in s.by_endpoint.items():
            t = totals.setdefault(ep, dict.fromkeys(EP_KEYS, 0.0))
            for k in EP_KEYS:
                t[k] += _num(usage.get(k)) or 0.0
    return [[ep, _fmt(t["calls"]), _fmt(t["cache_hits"]), _fmt(t["prompt_tokens"]),
             _fmt(t["completion_tokens"]), _usd(t["cost"])] for ep, t in sorted(totals.items())]


def _detail_rows(stages: list[tuple[str, StageStats]]) -> list[list[str]]:
    """The result blocks each stage type names (eval, decontamination, rationale, ...) as key=value lists."""
    rows = []
    for name, s in stages:
        for key, block in s.details():
            rows.append([name, key, ", ".join(f"{k}={_fmt(v, '.4g')}" for k, v in block.items())])
    return rows
