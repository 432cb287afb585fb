"""What k rationales per input cost as k requests, as one request with n=k (`n_per_request`), and through the batch API.

    .venv/bin/python benchmarks/samples.py [--inputs 40] [--k 4] [--input-price 0.5] [--output-price 1.5] [--batch-seconds 2]

A `rationale` stage (k samples per input, structured replies) on the first `--inputs` problems of
data/rationale/arithmetic_train.jsonl runs twice against the local test server, with prices in USD per
million tokens: with each sample its own request (the default), with `n_per_request: true`, and both of
those again in batch mode (`batch:` on the endpoint: /v1/files + /v1/batches, billed at
prices.batch_price_factor, 0.5). The test server bills like a hosted API: the prompt once per request,
the completion tokens of every choice. Prints requests, prompt and completion tokens billed and the cost
of each run (from run.json), and the wall time (the test server finishes a batch in --batch-seconds;
a provider takes minutes to hours).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import stage_entry  # noqa: E402
from tests.fakeserver import running_server  # noqa: E402


def run_stage(tmp: Path, base_url: str, inputs: int, k: int, prices: dict[str, float], n_per_request: bool, batch: bool) -> dict:
    """The rationale stage's run.json entry for one run."""
    lines = (REPO / "data" / "rationale" / "arithmetic_train.jsonl").read_text().splitlines()[:inputs]
    (tmp / "train.jsonl").write_text("\n".join(lines) + "\n")
    pipeline = {
        "name": "samples", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": {"base_url": base_url, "model": "teacher", "concurrency": 16, "timeout_s": 60,
                                  "prices": prices, "n_per_request": n_per_request,
                                  **({"batch": {"poll_interval_s": 0.2}} if batch else {})}},
        "stages": [{"name": "tasks", "type": "load", "path": str(tmp / "train.jsonl")},
                   # The test server's answers are pseudo-words: keep every parsed sample (no gold, no vote).
                   {"name": "rationales", "type": "rationale", "input": "tasks", "gold_column": None, "self_consistency": False,
                    "samples": k, "max_rationale_chars": 400, "sampling": {"temperature": 0.7, "max_tokens": 200, "seed": 1}}],
    }
    return stage_entry(tmp, pipeline, "rationales")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=40)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--input-price", type=float, default=0.5, help="USD per million prompt tokens")
    ap.add_argument("--output-price", type=float, default=1.5, help="USD per million completion tokens")
    ap.add_argument("--batch-seconds", type=float, default=2.0, help="how long the test server takes to finish a batch")
    args = ap.parse_args()
    prices = {"input_per_million": args.input_price, "output_per_million": args.output_price}
    print(f"rationale stage: {args.inputs} inputs x k={args.k} samples; prices ${args.input_price:g} in / "
          f"${args.output_price:g} out per million tokens")
    figures = {}
    runs = (("k requests", False, False), (f"n={args.k}", True, False), ("batch", False, True), (f"batch, n={args.k}", True, True))
    for label, n_per_request, batch in runs:
        with running_server(batch_seconds=args.batch_seconds) as server, tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            stage = run_stage(Path(tmp), server.base_url, args.inputs, args.k, prices, n_per_request, batch)
            wall = time.monotonic() - started
            requests = server.stats().get("chat_requests", 0) + sum(len(b["custom_ids"]) for b in server.batches())
        samples = stage["rationale"]["samples"]
        figures[label] = stage
        print(f"  {label:<13} requests {requests:4d}  prompt tokens billed {stage['prompt_tokens']:6d}  "
              f"completion tokens {stage['completion_tokens']:6d}  cost ${stage['cost_usd']:.6f}  "
              f"(${stage['cost_usd'] / samples * 1000:.4f} per 1000 samples; kept {stage['rationale']['kept']}/{samples})  "
              f"wall {wall:.1f} s")
    single = figures["k requests"]
    for label in list(figures)[1:]:
        print(f"  {label} bills {figures[label]['prompt_tokens'] / single['prompt_tokens']:.0%} of the prompt tokens and "
              f"{figures[label]['cost_usd'] / single['cost_usd']:.0%} of the cost of k requests")


if __name__ == "__main__":
    main()
