"""Prompt templates: jinja2 files under the pipeline's prompts_dir. Rendering is a pure function."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from synthkd.errors import ConfigError


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
        """Render with StrictUndefined: a missing variable is an error, never an empty string."""
        return self.template.render(**context).strip()

    def check_context(self, available: set[str], where: str) -> None:
        """Raise ConfigError if the template reads a variable the stage does not provide."""
        missing = sorted(self.variables - available)
        if missing:
            raise ConfigError(
                f"template {self.name} uses undefined variable(s) {', '.join(missing)}",
                where=where,
                fix=f"use only {', '.join(sorted(available)) or '(none)'} in the template, or add those columns upstream",
            )


class PromptLibrary:
    """Loads templates from one directory, with a strict environment shared by all of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(root)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,  # prompts are plain text, not HTML
        )
        self._cache: dict[str, Prompt] = {}

    def get(self, name: str, where: str = "") -> Prompt:
        """The compiled template `name` (relative to root); ConfigError if missing or malformed."""
        if name in self._cache:
            return self._cache[name]
        path = self.root / name
        if not path.is_file():
            raise ConfigError(
                f"template file not found: {path}",
                where=where or None,
                fix=f"create it, or point the key at an existing file under {self.root}",
            )
        source = path.read_text()
        try:
            ast = self.env.parse(source)
            template = self.env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"template syntax error: {exc.message}", where=f"{path}:{exc.lineno}", fix="fix the jinja2 syntax") from None
        prompt = Prompt(name=name, source=source, template=template, variables=frozenset(meta.find_undeclared_variables(ast)))
        self._cache[name] = prompt
        return prompt
