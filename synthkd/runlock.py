"""One synthkd run per run directory at a time.

Two runs on one `--out` would each pay for every uncached request, overrun `budget_usd` together and
race on run.json and the datasets. `run_lock` holds an exclusive `flock` on RUN_DIR/.synthkd.lock for
the whole run; the kernel drops it when the process ends however it ends (kill -9 included), so a
crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from synthkd.errors import SynthkdError

LOCK_FILE = ".synthkd.lock"


class RunDirBusy(SynthkdError):
    """Another synthkd process is running in this run directory."""

    exit_code = 2


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN_DIR's lock for the block; raise RunDirBusy at once if another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirBusy(f"run directory {run_dir} is in use by another synthkd run ({holder})",
                             fix=f"wait for it to finish (`synthkd status {run_dir}` shows its progress) or pass another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
