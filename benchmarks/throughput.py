"""Throughput of synthkd's generation path against the local test server, beside two bare loops.

    .venv/bin/python benchmarks/throughput.py [--requests 2000] [--inflight 256] [--latency-ms 200] [--cached 10000]

Prints, for each of: a bare AsyncOpenAI loop (default httpx transport), a bare loop with the
aiohttp transport, and a synthkd `generate` stage (cache, accounting, retries, datasets on disk):
requests/s and the client's own CPU milliseconds per request. Then the time to rerun a stage of
`--cached` records that are all in the request cache. The server runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fakeserver import running_server  # noqa: E402


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Benchmark request number {i}: say something."}]


async def bare_loop(base_url: str, n: int, inflight: int, aiohttp: bool) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) for n requests, `inflight` at a time, no synthkd."""
    http_client = openai.DefaultAioHttpClient() if aiohttp else None
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, http_client=http_client)
    if not aiohttp:
        # The default transport caps connections at 1000 but keep-alive at 100; give it 256 too.
        import httpx

        client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0,
                                    http_client=openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)))
    sem = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with sem:
            await client.chat.completions.create(model="m", messages=_messages(i), max_tokens=32)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await client.close()
    return wall, cpu


def _pipeline(tmp: Path, base_url: str, n: int, inflight: int) -> Path:
    import yaml

    data = tmp / "instructions.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "instruction": f"Benchmark request number {i}: say something."}) + "\n" for i in range(n)))
    spec = {
        "name": "bench",
        "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": {"base_url": base_url, "model": "m", "concurrency": inflight, "sampling": {"max_tokens": 32}}},
        "stages": [
            {"name": "seeds", "type": "load", "path": str(data)},
            {"name": "answers", "type": "generate", "input": "seeds", "endpoint": "teacher", "template": "lion/answer.jinja2"},
        ],
    }
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def synthkd_stage(pipeline: Path, run_dir: Path) -> tuple[float, float, dict]:
    """(wall, CPU, stage stats) of one `synthkd run` in this process."""
    from synthkd.pipeline import load_pipeline
    from synthkd.progress import Reporter
    from synthkd.runner import run_pipeline
    from synthkd.settings import Settings

    settings = Settings.from_environ()
    loaded = load_pipeline(pipeline, [], settings)
    cpu0, t0 = time.process_time(), time.perf_counter()
    asyncio.run(run_pipeline(loaded, run_dir, settings, Reporter(enabled=False)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    state = json.loads((run_dir / "run.json").read_text())
    return wall, cpu, state["stages"]["answers"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=256)
    ap.add_argument("--latency-ms", type=float, default=200)
    ap.add_argument("--cached", type=int, default=10000)
    args = ap.parse_args()
    n, k = args.requests, args.inflight
    import datasets  # noqa: F401  (import once, outside every timed section)
    print(f"server: latency {args.latency_ms:.0f} ms, {k} in flight, {n} requests (ceiling {k / (args.latency_ms / 1000):.0f} req/s); {os.cpu_count()} cores")
    rows = []
    with running_server(latency_ms=args.latency_ms) as server:
        for label, aio in (("AsyncOpenAI, default transport", False), ("AsyncOpenAI, aiohttp transport", True)):
            wall, cpu = asyncio.run(bare_loop(server.base_url, n, k, aio))
            rows.append((label, n / wall, 1000 * cpu / n))
        with tempfile.TemporaryDirectory() as tmp:
            pipeline = _pipeline(Path(tmp), server.base_url, n, k)
            _, cpu, stats = synthkd_stage(pipeline, Path(tmp) / "run")
            assert stats["calls"] == n and stats["records_out"] == n, stats
            # Rate over the stage's own time (run.json elapsed_s: render, calls, cache, dataset write);
            # CPU over the whole run (load stage, run.json, both dataset writes): conservative.
            rows.append(("synthkd generate stage", n / stats["elapsed_s"], 1000 * cpu / n))
        for label, rps, ms in rows:
            print(f"  {label:<34} {rps:8.0f} req/s   {ms:6.2f} ms CPU/request")
        base = rows[0][1]
        print(f"  synthkd vs default loop: {rows[2][1] / base:.2f}x  (target >= 1.8x)")

        with tempfile.TemporaryDirectory() as tmp:
            pipeline = _pipeline(Path(tmp), server.base_url, args.cached, k)
            run_dir = Path(tmp) / "run"
            wall_fill, _, _ = synthkd_stage(pipeline, run_dir)
            # Force the stage to run again (as after a crash past its last call): every record is a cache hit.
            (run_dir / "datasets" / "answers" / "_done.json").unlink()
            wall, cpu, stats = synthkd_stage(pipeline, run_dir)
            assert stats["cache_hits"] == args.cached and stats["calls"] == 0, stats
            print(f"  rerun of {args.cached} cached records: {wall:.2f} s ({args.cached / wall:.0f} records/s; target < 5 s). First fill: {wall_fill:.1f} s")


if __name__ == "__main__":
    main()
