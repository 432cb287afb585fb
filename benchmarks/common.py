"""What the benchmark scripts share: running a pipeline with the CLI and reading back a stage's run.json entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def stage_entry(tmp: Path, pipeline: dict[str, Any], stage: str) -> dict[str, Any]:
    """Write `pipeline` to TMP, run `synthkd run` on it (its own SYNTHKD_HOME) into TMP/run, and return the run.json
    entry of `stage`; exit with the end of stderr when the run fails."""
    path = tmp / f"{pipeline['name']}.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    out = tmp / "run"
    proc = subprocess.run([sys.executable, "-m", "synthkd.cli", "run", str(path), "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "SYNTHKD_HOME": str(tmp / "home")})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return dict(json.loads((out / "run.json").read_text())["stages"][stage])
