"""Read a pipeline YAML: `${env:VAR}` interpolation, `--set` overrides, and errors that name file:line.

Validation against the stage types is `synthkd.pipeline.load_pipeline`, which sits above them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from synthkd import yamlio
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from synthkd.errors import ConfigError
from synthkd.redact import SECRET_NAME, register_secret
from synthkd.settings import Settings

if TYPE_CHECKING:
    from synthkd.pipeline import PipelineConfig

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class LoadedPipeline:
    """A validated pipeline with where it came from (for relative paths and dataset cards)."""

    config: PipelineConfig
    path: Path
    yaml_text: str  # the file as written (with ${env:...} unexpanded, so no secret lands in a card)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the YAML, taken relative to the pipeline file."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def prompts_dir(self) -> Path:
        return self.resolve(self.config.prompts_dir)


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map dotted key paths (as tuples of strings) to 1-based line numbers in the YAML text."""
    index: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (str(key.value),)
                index[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (str(i),))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return index
    if root is not None:
        walk(root, ())
    return index


def _interpolate(value: Any, settings: Settings, where: tuple[str, ...], path: Path) -> Any:
    """Replace `${env:VAR}` / `${env:VAR:-default}` in every string of the parsed YAML."""
    if isinstance(value, dict):
        return {k: _interpolate(v, settings, where + (str(k),), path) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, settings, where + (str(i),), path) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${env:" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        got = settings.get(m.group(1))
        if got is None:
            if m.group(2) is not None:
                return m.group(2)
            raise ConfigError(
                f"environment variable {m.group(1)} is not set",
                where=f"{path}: {'.'.join(where)}",
                fix=f"export {m.group(1)}=... or write ${{env:{m.group(1)}:-default}}",
            )
        if any(SECRET_NAME.search(name) for name in (*where, m.group(1))):
            register_secret(got, f"${{env:{m.group(1)}}}")  # shown as ${env:VAR} wherever it would appear
        return got

    return _ENV_REF.sub(sub, value)


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `--set dotted.key=value`; the value is parsed as YAML (so 3, true, null work)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r} has no '='", fix="write --set dotted.key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    try:
        value = yamlio.load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: the value is not valid YAML ({_yaml_problem(exc)})",
                          fix="quote the value, e.g. --set 'key=\"text: with colon\"'") from None
    node: Any = data
    for part in parts[:-1]:
        nxt = _child(node, part, key)
        if nxt is None:
            nxt = {}
            _assign(node, part, nxt, key)
        node = nxt
    _assign(node, parts[-1], value, key)


def _child(node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, key)]
    if isinstance(node, dict):
        return node.get(part)
    raise ConfigError(f"--set {key}: {part!r} is inside a value that is not a mapping or list")


def _assign(node: Any, part: str, value: Any, key: str) -> None:
    if isinstance(node, list):
        node[_list_index(node, part, key)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"--set {key}: cannot set {part!r} inside a scalar value")


def _list_index(node: list[Any], part: str, key: str) -> int:
    # Stages may be addressed by position (stages.1.x) or by name (stages.lion.x).
    if part.isdigit() and int(part) < len(node):
        return int(part)
    for i, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    raise ConfigError(f"--set {key}: no list item {part!r}", fix="use a position (0, 1, ...) or a stage name")


def _locate(loc: tuple[Any, ...], data: dict[str, Any], lines: dict[tuple[str, ...], int], path: Path) -> str:
    """Turn a pydantic error location into 'file:line: dotted.key' (discriminator tags dropped)."""
    keys: list[str] = []
    node: Any = data
    for part in loc:
        if isinstance(node, list) and isinstance(part, int):
            keys.append(str(part))
            node = node[part] if part < len(node) else None
        elif isinstance(node, dict) and part in node:
            keys.append(str(part))
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part not in node and node.get("type") == part:
            continue  # the union's tag, not a key
        else:
            keys.append(str(part))
            node = None
    probe = tuple(keys)
    while probe and probe not in lines:
        probe = probe[:-1]
    line = lines.get(probe)
    dotted = ".".join(keys) or "(top level)"
    return f"{path}:{line}: {dotted}" if line else f"{path}: {dotted}"


def _read_text(path: Path) -> str:
    """The pipeline file's text; ConfigError if it is missing, a directory, unreadable or not UTF-8."""
    if path.is_dir():
        raise ConfigError("the path is a directory, not a pipeline file", where=str(path),
                          fix="pass the path of a YAML file, e.g. pipelines/lion.yaml")
    if not path.exists():
        raise ConfigError(f"pipeline file not found: {path}", fix="pass the path of a YAML file, e.g. pipelines/lion.yaml")
    if not path.is_file():  # a FIFO or device: reading it could block
        raise ConfigError("the path is not a regular file (a pipe or device?)", where=str(path), fix="pass the path of a YAML file, e.g. pipelines/lion.yaml")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the pipeline file: {exc.strerror or type(exc).__name__}", where=str(path),
                          fix="make it readable (e.g. chmod u+r) or pass another path") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf16 = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            f"the pipeline file is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} is invalid{utf16}",
            where=str(path),
            fix="save the file as UTF-8 (in an editor: save with encoding UTF-8; or iconv -f <encoding> -t UTF-8)",
        ) from None


def read_pipeline(path: Path, overrides: list[str] | None, settings: Settings) -> tuple[str, dict[str, Any]]:
    """The pipeline file's text, and its data after `--set` overrides and `${env:...}` interpolation (not yet
    validated: `synthkd.pipeline.load_pipeline` validates it against the stage types). Raises ConfigError."""
    text = _read_text(path)
    try:
        raw = yamlio.load(text)
    except yamlio.RefusedYAML as exc:
        raise ConfigError(exc.problem, where=f"{path}:{exc.line}" if exc.line else str(path), fix=exc.fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"malformed YAML: {_yaml_problem(exc)}", where=where, fix="check indentation and quoting on that line") from None
    if not isinstance(raw, dict):
        raise ConfigError("a pipeline file must be a YAML mapping", where=str(path), fix="start with `name:`, `endpoints:`, `stages:`")
    for assignment in overrides or []:
        _apply_override(raw, assignment)
    return text, _interpolate(raw, settings, (), path)


def invalid_pipeline(exc: ValidationError, text: str, data: dict[str, Any], path: Path, stage_types: list[str]) -> ConfigError:
    """The one-line error for a pipeline that does not validate: its first problem, at file:line, with a fix."""
    err = exc.errors()[0]
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return ConfigError(_describe(err) + more, where=_locate(tuple(err["loc"]), data, _line_index(text), path),
                       fix=_fix_for(err, stage_types))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The one-line problem of a YAML error (PyYAML's own text spans several lines)."""
    return getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]


def _describe(err: ErrorDetails) -> str:
    """The problem in words; never the value of a secret-looking key (a key pasted into api_key_env)."""
    text = _describe_kind(err)
    value = err.get("input")
    if isinstance(value, str) and value and any(SECRET_NAME.search(str(part)) for part in err["loc"]):
        text = text.replace(value, "***")
    return text


def _describe_kind(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key {err['loc'][-1]!r}"
    if kind == "union_tag_invalid":
        return f"unknown stage type {err['input'].get('type') if isinstance(err['input'], dict) else err['input']!r}"
    if kind == "union_tag_not_found":
        return "stage has no `type`"
    if kind == "missing":
        return f"missing required key {err['loc'][-1]!r}"
    return str(err["msg"]).removeprefix("Value error, ")


def _fix_for(err: ErrorDetails, stage_types: list[str]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden" and SECRET_NAME.search(str(err["loc"][-1])) and "url" not in str(err["loc"][-1]).lower():
        return ("remove it: synthkd reads API keys only from the environment; write `api_key_env: NAME` on the endpoint "
                "and export NAME=<the key>")
    if kind == "extra_forbidden":
        return "remove or rename it; `synthkd validate --help` and the README list the keys"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"use one of the stage types: {', '.join(stage_types)}"
    if kind == "missing":
        return "add the key"
    return "change the value as the message says"
