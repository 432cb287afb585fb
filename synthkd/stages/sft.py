"""`sft`: TRL SFT on an earlier stage's `messages`; optionally restart an endpoint on the result."""

from __future__ import annotations

import asyncio
from typing import Any

from synthkd.config.stages import SFTStage
from synthkd.runtime import Runtime, digest
from synthkd.train.common import checkpoint_done, read_metrics
from synthkd.train.sft import train_sft


async def run_sft(cfg: SFTStage, rt: Runtime, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Train (unless the same checkpoint exists) and return its metrics and path."""
    if not rows:
        rt.reporter.note(f"[{cfg.name}] no training examples: SFT skipped, {cfg.serve_as or 'no endpoint'} keeps its weights")
        return {"skipped": "no training examples"}
    fp = digest({"rows": [r["messages"] for r in rows], "model": cfg.model, "sft": cfg.sft, "lora": cfg.lora, "seed": rt.config.seed})
    out = rt.run_dir / "checkpoints" / cfg.name
    if not checkpoint_done(out, fp):
        base = rt.servers.resolve_model_path(cfg.model)
        rt.reporter.note(f"[{cfg.name}] SFT of {cfg.model} on {len(rows)} examples")
        await asyncio.to_thread(train_sft, rows, base, out, sft_args=cfg.sft, lora=cfg.lora, seed=rt.config.seed, fingerprint=fp)
    if cfg.serve_as:
        rt.serve_weights(cfg.serve_as, str(out))
    return {"checkpoint": str(out), **read_metrics(out)}
