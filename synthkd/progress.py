"""Progress bars per step with calls/s, tokens, cost and ETA (plain log lines when not a terminal)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from synthkd.client.accounting import Meter
from synthkd.redact import scrub

console = Console(stderr=True)


class StepProgress:
    """Handle for one step's bar; `advance()` after each finished item."""

    def __init__(self, progress: Progress | None, task_id: int | None, label: str, total: int, meter: Meter) -> None:
        self.progress, self.task_id, self.label, self.total, self.meter = progress, task_id, label, total, meter
        self.done = 0
        self.t0 = time.monotonic()
        self._last_log = self.t0

    def _stats(self) -> str:
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        m = self.meter
        cached = f" ({m.cached_prompt_tokens} cached)" if m.cached_prompt_tokens else ""
        return f"{m.calls / elapsed:6.1f} calls/s  hits {m.cache_hits}  tok {m.prompt_tokens + m.completion_tokens}{cached}  ${m.cost:.4f}"

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.progress is not None and self.task_id is not None:
            self.progress.update(self.task_id, advance=n, stats=self._stats())
            return
        now = time.monotonic()
        if now - self._last_log > 10 or self.done == self.total:
            self._last_log = now
            console.print(f"  {self.label}: {self.done}/{self.total}  {self._stats()}", highlight=False, markup=False)


class Reporter:
    """Creates progress bars; one live display for the whole run."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.live = sys.stderr.isatty() if enabled is None else enabled

    @contextmanager
    def step(self, label: str, total: int, meter: Meter) -> Iterator[StepProgress]:
        if not self.live or total == 0:
            console.print(f"{label}: {total} item(s)", highlight=False, markup=False)
            yield StepProgress(None, None, label, total, meter)
            return
        columns = (
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task_id = progress.add_task(label, total=total, stats="")
            yield StepProgress(progress, task_id, label, total, meter)

    def note(self, text: str) -> None:
        console.print(scrub(text), highlight=False, markup=False)
