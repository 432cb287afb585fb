"""Generation throughput with 1, 2 and 4 replicas behind one endpoint name.

    .venv/bin/python benchmarks/replicas.py [--requests 600] [--capacity 8] [--latency-ms 100] [--replicas 1 2 4]

Each replica is the local test server with a capacity limit (`--capacity` requests worked on at once,
each taking `--latency-ms`), so one replica can do at most capacity / latency requests per second,
as a GPU server's batch is bounded. A synthkd `generate` stage sends `--requests` calls to an
endpoint whose `base_url` lists the replicas; the client spreads them by requests in flight. Prints
requests/s (over the stage's own elapsed time), the ceiling, and the speed-up over one replica.
Expect near-linear scaling until the client's own CPU is the limit (several hundred requests/s on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import stage_entry  # noqa: E402
from tests.fakeserver import running_server  # noqa: E402


def run_stage(tmp: Path, urls: list[str], requests: int, concurrency: int) -> tuple[float, dict[str, int]]:
    """(requests/s over the stage's elapsed time, calls per replica) for one generate stage."""
    seeds = tmp / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"r{i}", "instruction": f"Benchmark instruction number {i}: answer it."}) + "\n"
                             for i in range(requests)))
    pipeline = {
        "name": "bench", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": {"base_url": urls, "model": "teacher", "concurrency": concurrency, "timeout_s": 60}},
        "stages": [{"name": "seeds", "type": "load", "path": str(seeds)},
                   {"name": "answers", "type": "generate", "input": "seeds", "endpoint": "teacher",
                    "template": "lion/answer.jinja2", "sampling": {"max_tokens": 16}}],
    }
    stage = stage_entry(tmp, pipeline, "answers")
    per = {k.split(" ", 1)[1]: int(v) for k, v in stage["by_endpoint"]["teacher"].items() if k.startswith("replica_calls ")}
    assert stage["calls"] == requests, stage["calls"]
    return requests / stage["elapsed_s"], per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--capacity", type=int, default=8, help="requests one replica works on at once")
    ap.add_argument("--latency-ms", type=float, default=100)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    per_replica = args.capacity / (args.latency_ms / 1000)
    print(f"replica: capacity {args.capacity} at {args.latency_ms:.0f} ms = at most {per_replica:.0f} req/s; "
          f"{args.requests} requests per run; {os.cpu_count()} cores")
    base = None
    for k in args.replicas:
        with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            servers = [stack.enter_context(running_server(latency_ms=args.latency_ms, capacity=args.capacity)) for _ in range(k)]
            # Enough in flight to fill every replica twice over: the replicas, not the client, are the limit.
            rate, per = run_stage(Path(tmp), [s.base_url for s in servers], args.requests, concurrency=2 * args.capacity * k)
        base = base or rate
        spread = "/".join(str(v) for v in per.values()) if per else str(args.requests)
        print(f"  {k} replica(s): {rate:6.1f} req/s  (ceiling {per_replica * k:5.0f}, {rate / (per_replica * k):4.0%} of it)  "
              f"speed-up {rate / base:4.2f}x  calls per replica {spread}")


if __name__ == "__main__":
    main()
