"""`sft`: TRL SFT on an earlier stage's `messages`; optionally restart an endpoint on the result."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from synthkd.config.stages import StageBase, TrainingLaunch
from synthkd.records import StageStats
from synthkd.hashing import digest
from synthkd.stages.base import CheckContext, ModelUse, Reads, RunInputs, StageImpl, StageResult, Uses, checkpoint_dir
from synthkd.train.common import checkpoint_done, read_metrics
from synthkd.train.launch import Job, check_accelerate_config, train_async
from synthkd.train.sft import check_sft_args


class SFTStage(StageBase, TrainingLaunch):
    """TRL SFT of a model on an earlier stage's `messages` column."""

    type: Literal["sft"]

    input: str = Field(..., description="Earlier stage with a `messages` column.")
    model: str = Field(..., description="Base weights: local directory, hub name, or tiny:NAME.")
    sft: dict[str, Any] = Field(default_factory=dict, description="Passed straight to trl.SFTConfig.")
    freeze_embeddings: bool = Field(
        False, description="Do not train the input embeddings (nor an output head tied to them): a depth-pruned student "
        "keeps its source's embeddings, so only its layers need to heal; on a 135M model with a 49k vocabulary it also "
        "takes about 12% off each CPU step (measured once, 20 steps).")
    lora: dict[str, Any] | None = Field(None, description="Passed to peft.LoraConfig; null for full fine-tuning.")
    serve_as: str | None = Field(None, description="Endpoint (with `serve`) to restart on the new checkpoint.")


class SFTStats(StageStats):
    """run.json entry of an sft stage."""

    checkpoint: str | None = None
    train_loss: float | None = None
    steps: int | None = None
    examples: int | None = None
    skipped: str | None = None

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"skipped: {self.skipped}"]
        return [f"{self.steps} steps on {self.examples} examples, train loss {self.train_loss:.4f}: {self.checkpoint}"] if self.steps is not None else []


class SFTImpl(StageImpl[SFTStage]):
    """Trains; its rows are its input's, passed through (so a later stage can read them too)."""

    stats_type = SFTStats
    fmt = "sft (messages)"

    def reads(self) -> list[Reads]:
        return [Reads("input", self.cfg.input, frozenset({"messages"}))]

    def uses(self) -> list[Uses]:
        return [Uses("serve_as", self.cfg.serve_as)]

    def models(self) -> list[ModelUse]:
        return [ModelUse("model", self.cfg.model)]

    def moves(self) -> list[str]:
        return [self.cfg.serve_as] if self.cfg.serve_as else []

    def check(self, ctx: CheckContext) -> None:
        check_sft_args(self.cfg.sft, ctx.where("sft"), ctx.accepted_args)
        check_accelerate_config(self.cfg.accelerate_config, ctx)

    async def run(self, inp: RunInputs) -> StageResult:
        """Train (unless the same checkpoint exists); the endpoint in `serve_as` moves onto it."""
        cfg, rt, rows = self.cfg, inp.rt, inp.get("input")
        if not rows:
            rt.reporter.note(f"[{cfg.name}] no training examples: SFT skipped, {cfg.serve_as or 'no endpoint'} keeps its weights")
            return StageResult(rows=rows, stats=SFTStats(skipped="no training examples"))
        # processes / accelerate_config are left out: 1 process keeps the fingerprints of earlier runs, and a
        # checkpoint trained on N processes is reused on M (how training runs, not what it trains on).
        fp = digest({"rows": [r["messages"] for r in rows], "model": cfg.model, "sft": cfg.sft, "lora": cfg.lora, "seed": rt.config.seed,
                     **({"freeze_embeddings": True} if cfg.freeze_embeddings else {})})  # absent when off: older checkpoints stay valid
        out = checkpoint_dir(rt, cfg.name)
        if not checkpoint_done(out, fp):
            base = rt.servers.resolve_model_path(cfg.model)
            rt.reporter.note(f"[{cfg.name}] SFT of {cfg.model} on {len(rows)} examples")
            await train_async(Job("sft", rows, base, out, cfg.sft, cfg.lora, rt.config.seed, fp, processes=cfg.processes,
                                  accelerate_config=rt.pipeline.resolve(cfg.accelerate_config) if cfg.accelerate_config else None,
                                  log_path=rt.run_dir / "logs" / f"train-{cfg.name}.log", freeze_embeddings=cfg.freeze_embeddings))
        return StageResult(rows=rows, stats=SFTStats(checkpoint=str(out), **read_metrics(out)),
                           moves={cfg.serve_as: str(out)} if cfg.serve_as else {})
