"""Prompt templates: jinja2 files under the pipeline's prompts_dir. Rendering is a pure function."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from synthkd.errors import ConfigError

# Templates several methods share, moved to prompts/common/ from the method that had them first:
# new name -> the name it had before. Either name works in a pipeline, in `validate` and in `{% include %}`:
# when the file a name points at is missing, the other name's file is read (`resolve`), so a pipeline naming
# the old file with our new prompts/ works, and so does a prompts_dir copied from ours before the move (old
# files only) with the new defaults. Fingerprints record the old name (`PromptLibrary.fingerprint_name`), so
# finished stages of runs made before the move stay done. A template that moves later is one more line here.
MOVED: dict[str, str] = {
    "common/answer.jinja2": "lion/answer.jinja2",
    "common/referee.jinja2": "lion/referee.jinja2",
    "common/score.jinja2": "dpo/score.jinja2",
}
_OTHER_NAME: dict[str, str] = {**MOVED, **{old: new for new, old in MOVED.items()}}


def other_name(name: str) -> str | None:
    """The other name of a moved template (old for new, new for old); None for a template that did not move."""
    return _OTHER_NAME.get(name)


@dataclass(frozen=True)
class Prompt:
    """One template file, compiled once. `variables` are the names it reads from its context."""

    name: str
    source: str
    template: jinja2.Template
    variables: frozenset[str]

    @cached_property
    def sha256(self) -> str:
        """Hash of the template text, written to dataset cards so a dataset names its exact prompt."""
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def render(self, **context: Any) -> str:
        """Render with StrictUndefined: a missing variable is an error, never an empty string.

        A template the sandbox stops (one that reaches for Python internals in a way validate cannot
        see) is a ConfigError: it would fail the same way on every row."""
        try:
            return self.template.render(**context).strip()
        except SecurityError as exc:
            raise ConfigError(f"template {self.name} was stopped by the sandbox: {str(exc).splitlines()[0]}",
                              fix="templates may use the stage's variables and their public fields only") from None
        except jinja2.TemplateNotFound as exc:  # an include whose name is computed per row
            raise ConfigError(f"template {self.name} includes {exc.name!r}, which is not a file inside prompts_dir",
                              fix="include files under prompts_dir by relative paths") from None

    def check_context(self, available: set[str], where: str) -> None:
        """Raise ConfigError if the template reads a variable the stage does not provide."""
        missing = sorted(self.variables - available)
        if missing:
            raise ConfigError(
                f"template {self.name} uses undefined variable(s) {', '.join(missing)}",
                where=where,
                fix=f"use only {', '.join(sorted(available)) or '(none)'} in the template, or add those columns upstream",
            )


class _PromptsLoader(jinja2.BaseLoader):
    """What `{% include %}` / `{% import %}` / `{% extends %}` read: files inside the prompts directory only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        path = resolve(self.root, template)
        if path is None or not path.is_file():
            raise jinja2.TemplateNotFound(template)
        mtime = path.stat().st_mtime
        return path.read_text(), str(path), lambda: path.stat().st_mtime == mtime


def template_path(root: Path, name: str) -> Path | None:
    """root/name, or None when that leaves root: an absolute name, a `..` escape, a symlink pointing out."""
    if Path(name).is_absolute():
        return None
    base = root.resolve()
    path = (base / name).resolve()
    return path if path.is_relative_to(base) else None


def resolve(root: Path, name: str) -> Path | None:
    """The file template `name` reads: root/name, or, when that is missing and `name` is a moved template
    (MOVED), the file under its other name. None when `name` leaves root (the other name is never tried then)."""
    path = template_path(root, name)
    other = other_name(name)
    if path is None or path.is_file() or other is None:
        return path
    fallback = template_path(root, other)
    return fallback if fallback is not None and fallback.is_file() else path


class PromptLibrary:
    """Loads templates from one directory, with a strict, sandboxed environment shared by all of them.

    Pipelines come from users, but templates are often copied from elsewhere: the sandbox keeps a
    template from reaching Python internals (and through them the environment's API keys), and the
    loader keeps it from reading files outside the prompts directory.

    A moved template (MOVED) is found under either of its names: the one asked for when its file is there,
    else the other one's file.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = ImmutableSandboxedEnvironment(
            loader=_PromptsLoader(root),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,  # prompts are plain text, not HTML
        )
        self._cache: dict[str, Prompt] = {}

    def get(self, name: str, where: str = "") -> Prompt:
        """The compiled template `name` (relative to root); ConfigError if missing, malformed, outside root,
        reaching for Python internals, or including a template that is not there."""
        if name in self._cache:
            return self._cache[name]
        path = self._path(name, where)
        source, ast, template = self._compile(path, where)
        variables = meta.find_undeclared_variables(ast) | self._check_includes(ast, path, where, seen={path})
        prompt = Prompt(name=name, source=source, template=template, variables=frozenset(variables))
        self._cache[name] = prompt
        return prompt

    def fingerprint_name(self, name: str) -> str:
        """The name a stage's fingerprint records for template `name`: a moved template's old name, so stages a
        run finished before the move (their fingerprints hold the old name) stay done on resume, whichever name
        the pipeline uses now. Only a prompts_dir holding different text under the two names keeps the new name:
        those are two templates. Needs no file (a config field the stage does not read is recorded too)."""
        old = MOVED.get(name)
        if old is None:
            return name
        new_path, old_path = template_path(self.root, name), template_path(self.root, old)
        apart = (new_path is not None and old_path is not None and new_path.is_file() and old_path.is_file()
                 and new_path.read_bytes() != old_path.read_bytes())
        return name if apart else old

    def _path(self, name: str, where: str, included_by: Path | None = None) -> Path:
        path = resolve(self.root, name)
        by = f" (included by {included_by})" if included_by else ""
        if path is None:
            raise ConfigError(f"template {name!r}{by} is outside prompts_dir {self.root}", where=where or None,
                              fix=f"name a file under {self.root} by a relative path without `..` (and no symlink out of it)")
        if not path.is_file():
            raise ConfigError(f"template file not found: {self.root / name}{by}", where=where or None,
                              fix=f"create it, or point the key at an existing file under {self.root}")
        return path

    def _compile(self, path: Path, where: str) -> tuple[str, nodes.Template, jinja2.Template]:
        source = path.read_text()
        try:
            ast = self.env.parse(source)
            template = self.env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"template syntax error: {exc.message}", where=f"{path}:{exc.lineno}", fix="fix the jinja2 syntax") from None
        _check_attributes(ast, path)
        return source, ast, template

    def _check_includes(self, ast: nodes.Template, path: Path, where: str, seen: set[Path]) -> set[str]:
        """Every template a template names literally is there (and checked the same way), before any call.
        Returns the variables those templates read that this one does not set itself (the stage must provide them)."""
        variables: set[str] = set()
        for name in meta.find_referenced_templates(ast):
            if name is None:
                continue  # computed at render time: the loader still keeps it inside root
            included = self._path(name, where, included_by=path)
            if included not in seen:
                seen.add(included)
                sub = self._compile(included, where)[1]
                variables |= meta.find_undeclared_variables(sub) | self._check_includes(sub, included, where, seen)
        assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
        return variables - assigned


def _check_attributes(ast: nodes.Template, path: Path) -> None:
    """Refuse `x._private` / `x['__dunder__']` at validate time: the sandbox would refuse them on the first row."""
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Filter):  # x|attr("__class__")
            attr = getattr(node.args[0], "value", None) if node.name == "attr" and node.args else None
        else:
            attr = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(attr, str) and attr.startswith("_"):
            raise ConfigError(f"template reads the attribute {attr!r}: templates may not reach Python internals",
                              where=f"{path}:{node.lineno}", fix="use only the variables the stage provides and their public fields")
