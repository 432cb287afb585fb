"""The library's error hierarchy. Only the CLI turns these into messages and exit codes."""

from __future__ import annotations


class SynthkdError(Exception):
    """Base class. `where` names the place (file:line or dotted key), `fix` says what to do."""

    exit_code = 1

    def __init__(self, what: str, where: str | None = None, fix: str | None = None) -> None:
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.message())

    def message(self) -> str:
        parts = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return "  ".join(parts)


class ConfigError(SynthkdError):
    """Bad input found before any endpoint call: the user must change the pipeline or command."""

    exit_code = 2


class EndpointError(SynthkdError):
    """An endpoint cannot be used at all (unreachable, bad key, unknown model)."""

    exit_code = 2


class BudgetExceeded(SynthkdError):
    """The run's `budget_usd` would be exceeded by the next call; everything paid is cached."""

    exit_code = 3


class StorageError(SynthkdError):
    """The run directory cannot be written or read (disk full, a corrupt cache file): nothing is wrong with the
    pipeline, and everything stored so far is kept."""

    exit_code = 1


class ServeError(SynthkdError):
    """A model server synthkd started failed to come up or died."""

    exit_code = 1
