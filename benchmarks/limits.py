"""Provider limits with and without adaptation: refused requests and failed rows.

    .venv/bin/python benchmarks/limits.py [--rows 200] [--repeats 3]

Two limits a hosted API imposes, played by the local test server, each met by a `generate` stage with
`adaptive: true` (the default) and `adaptive: false`:

* a hidden concurrency limit (`--max-inflight 8`, 60 ms per reply; 429 with Retry-After above it),
  with `concurrency: 64`: adaptive concurrency (AIMD) has to find it;
* a per-minute quota announced in x-ratelimit-* headers (`--rpm 600`, enforced over one second), with
  `concurrency: 32`: the announced quota becomes the endpoint's rate limit.

Prints, per case and setting, the 429s the server sent, the rows that failed after `max_retries` (8),
the adaptive limit's lowest and final value or the learned rpm, and the wall time (medians over
--repeats runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import seeds_file  # noqa: E402
from benchmarks.common import stage_entry  # noqa: E402
from tests.fakeserver import running_server  # noqa: E402


def one_run(tmp: Path, base_url: str, rows: int, concurrency: int, adaptive: bool) -> tuple[dict[str, Any], int, float]:
    """(the stage's by_endpoint entry, failed rows, wall seconds) of one `synthkd run`."""
    pipeline = {
        "name": "limits", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": {"base_url": base_url, "model": "teacher", "concurrency": concurrency, "adaptive": adaptive}},
        "stages": [{"name": "seeds", "type": "load", "path": str(seeds_file(tmp, rows))},
                   {"name": "answers", "type": "generate", "input": "seeds", "endpoint": "teacher",
                    "template": "lion/answer.jinja2", "sampling": {"max_tokens": 32, "seed": 7}}],
    }
    started = time.monotonic()
    stage = stage_entry(tmp, pipeline, "answers")
    return stage["by_endpoint"]["teacher"], stage["failed"], time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cases = (("hidden limit of 8 in flight, concurrency 64", {"latency_ms": 60, "max_inflight": 8}, 64, "rejected_inflight"),
             ("quota of 600 requests/minute, concurrency 32", {"latency_ms": 20, "rpm": 600}, 32, "rejected_quota"))
    print(f"{args.rows} rows per run, median of {args.repeats} runs")
    for title, server_args, concurrency, counter in cases:
        print(title)
        for adaptive in (True, False):
            refused, failed, walls, limits = [], [], [], []
            for _ in range(args.repeats):
                with running_server(**server_args) as server, tempfile.TemporaryDirectory() as tmp:
                    ep, fails, wall = one_run(Path(tmp), server.base_url, args.rows, concurrency, adaptive)
                    refused.append(server.stats().get(counter, 0))
                failed.append(fails)
                walls.append(wall)
                if "rpm_learned" in ep:
                    limits.append(f"rpm learned {ep['rpm_learned']}")
                elif "adaptive_limit_min" in ep:
                    limits.append(f"limit min {ep['adaptive_limit_min']} final {ep['adaptive_limit_final']}")
            label = "adaptive: true " if adaptive else "adaptive: false"
            print(f"  {label}  refused {statistics.median(refused):6.0f}  failed rows {statistics.median(failed):4.0f}  "
                  f"wall {statistics.median(walls):5.1f} s  {'; '.join(sorted(set(limits))) or '-'}")


if __name__ == "__main__":
    main()
