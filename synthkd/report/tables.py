"""The report's tables: run.json read defensively (any value may be missing or of the wrong type) into rows of text."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from synthkd.errors import ConfigError

FIX = "pass a directory written by `synthkd run`"
STAGE_COLS = ["stage", "type", "status", "records in", "records out", "failed", "calls",
              "cache hits", "retries", "tokens", "cost", "elapsed"]
EP_KEYS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "cost")


def _load(run_dir: Path) -> dict[str, Any]:
    """run.json as a dict, or ConfigError saying what is wrong with it."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise ConfigError(f"no run.json in {run_dir}", where=str(path), fix=FIX)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"run.json cannot be read: {exc}", where=str(path), fix=FIX) from exc
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise ConfigError('run.json has no "stages" object', where=str(path), fix=FIX)
    return data


def _d(value: Any) -> dict[str, Any]:
    """The value if it is a dict, else an empty dict."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    """The value if it is a list, else an empty list."""
    return value if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    """A finite number, else None (booleans and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


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


def _header_rows(data: dict[str, Any]) -> list[list[str]]:
    """Field/value rows for the run as a whole."""
    rows = [["pipeline", str(data.get("pipeline", "?"))], ["status", str(data.get("status", "?"))],
            ["invocations", _fmt(data.get("invocations"))], ["total spend", _usd(data.get("spent_usd_total"))]]
    rows += [[k, str(data[k])] for k in ("started", "updated") if k in data]
    this = _d(data.get("this_invocation"))
    if this:
        rows.append(["this invocation", f"{_fmt(this.get('calls'))} calls, "
                     f"{_fmt(this.get('cache_hits'))} cache hits, {_usd(this.get('cost_usd'))}"])
    return rows


def _stage_rows(stages: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """One row per stage, columns as in STAGE_COLS."""
    rows = []
    for name, s in stages:
        toks = [t for t in (_num(s.get("prompt_tokens")), _num(s.get("completion_tokens"))) if t is not None]
        elapsed = _num(s.get("elapsed_s"))
        rows.append([name, str(s.get("type", "?")), str(s.get("status", "?")), _fmt(s.get("records_in")),
                     _fmt(s.get("records_out")), _fmt(s.get("failed")), _fmt(s.get("calls")),
                     _fmt(s.get("cache_hits")), _fmt(s.get("retries")), _fmt(sum(toks)) if toks else "–",
                     _usd(s.get("cost_usd")), "–" if elapsed is None else f"{elapsed:,.1f} s"])
    return rows


def _failure_rows(stages: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """(stage, reason, count) rows, most frequent first; "none" for a stage without failures."""
    rows = []
    for name, s in stages:
        fails = sorted(_d(s.get("failures")).items(), key=lambda kv: -(_num(kv[1]) or 0))
        rows += [[name, str(reason), _fmt(count)] for reason, count in fails] or [[name, "none", ""]]
    return rows


def _endpoint_rows(stages: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """Per-endpoint usage summed over all stages."""
    totals: dict[str, dict[str, float]] = {}
    for _, s in stages:
        for ep, usage in _d(s.get("by_endpoint")).items():
            t = totals.setdefault(str(ep), dict.fromkeys(EP_KEYS, 0.0))
            for k in EP_KEYS:
                t[k] += _num(_d(usage).get(k)) or 0.0
    return [[ep, _fmt(t["calls"]), _fmt(t["cache_hits"]), _fmt(t["prompt_tokens"]),
             _fmt(t["completion_tokens"]), _usd(t["cost"])] for ep, t in sorted(totals.items())]


def _detail_rows(stages: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """The result blocks each stage type names (eval, decontamination, rationale, ...) as key=value lists."""
    from synthkd.pipeline import read_stage_stats

    rows = []
    for name, s in stages:
        for key, block in read_stage_stats(s).details():
            rows.append([name, key, ", ".join(f"{k}={_fmt(v, '.4g')}" for k, v in block.items())])
    return rows
