"""The efficacy benchmark is `synthkd efficacy`: this script runs its quick tier on the project's data.

    .venv/bin/python benchmarks/efficacy.py [more synthkd efficacy options]     # or: make efficacy

It is the same as
    synthkd efficacy pipelines/efficacy.yaml --heldout data/distill/heldout_phrasings.jsonl \
        --heldout data/distill/heldout_families.jsonl --out runs/efficacy
(see `synthkd efficacy --help`); extra arguments are passed on, e.g. `--tier thorough` on a GPU machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARGS = ["efficacy", str(REPO / "pipelines" / "efficacy.yaml"),
        "--heldout", str(REPO / "data" / "distill" / "heldout_phrasings.jsonl"),
        "--heldout", str(REPO / "data" / "distill" / "heldout_families.jsonl")]

if __name__ == "__main__":
    extra = sys.argv[1:]
    out = [] if "--out" in extra else ["--out", str(REPO / "runs" / "efficacy")]
    synthkd = Path(sys.executable).parent / "synthkd"
    os.execv(str(synthkd), [str(synthkd), *ARGS, *out, *extra])
