"""Process environment, read once into a settings object and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Everything synthkd reads from the environment, read at one place (the CLI)."""

    home: Path
    env: dict[str, str] = field(repr=False)  # repr=False: never print API keys by accident

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> "Settings":
        environ = dict(os.environ if environ is None else environ)
        home = Path(environ.get("SYNTHKD_HOME", Path.home() / ".cache" / "synthkd"))
        return cls(home=home, env=environ)

    def get(self, name: str) -> str | None:
        """Value of an environment variable, as seen when the settings were read."""
        return self.env.get(name)
