"""`sft`: TRL SFT on an earlier stage's `messages`; optionally restart an endpoint on the result."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from synthkd.config.stages import LoraArgs, StageBase, TrainingLaunch
from synthkd.errors import ConfigError
from synthkd.records import StageStats
from synthkd.stages.base import CheckContext, ModelUse, Reads, RunInputs, StageImpl, StageResult, Uses
from synthkd.stages.training import train_checkpoint
from synthkd.train.launch import check_accelerate_config
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
    freeze_layers: int = Field(  # left out of the fingerprint at 0, so runs made before it existed stay done
        0, ge=0, exclude_if=lambda value: value == 0, description="Do not train the lowest N transformer layers either: the gradient stops above them, so each "
        "step costs less (the demo's 20-layer student, N=8: 22% less per CPU step, measured once over 6 steps). 0: all train.")
    lora: LoraArgs | None = Field(None, description="Passed to peft.LoraConfig; null for full fine-tuning.")
    serve_as: str | None = Field(None, description="Endpoint (with `serve`) to restart on the new checkpoint.")
    # Left out of the fingerprint at its default, so sft stages of runs made before it existed stay done.
    messages_column: str = Field(
        "messages", exclude_if=lambda value: value == "messages",
        description="The conversational column trained on, e.g. structured_messages: the transcript a tool_use stage in "
        "structured mode sent, for a student that will be asked the same way.")


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


def _check_conversations(rows: list[dict[str, Any]], column: str, where: str) -> None:
    """Every row's conversation is a non-empty list of {role, content} messages: a column of another shape (plain text,
    say) is one clear error before training starts, not a trainer's traceback."""
    for i, row in enumerate(rows):
        messages = row.get("messages")
        if not (isinstance(messages, list) and messages
                and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)):
            raise ConfigError(f"row {i} (id {row.get('id', i)!r}) of column {column!r} is not a conversation (a list of "
                              f"messages with a role and content): {str(messages)[:120]!r}", where=where,
                              fix="point messages_column at a conversational column (messages, structured_messages)")


class SFTImpl(StageImpl[SFTStage]):
    """Trains; its rows are its input's, passed through (so a later stage can read them too)."""

    stats_type = SFTStats
    fmt = "sft (messages)"

    def reads(self) -> list[Reads]:
        return [Reads("input", self.cfg.input, frozenset({self.cfg.messages_column}), columns_key="messages_column")]

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
        # another column: trained on as the conversation, without the tool schemas of the OpenAI form beside it
        train_rows = rows if cfg.messages_column == "messages" else [{"messages": r[cfg.messages_column]} for r in rows]
        _check_conversations(train_rows, cfg.messages_column, f"stages.{cfg.name}.messages_column")
        out, metrics = await train_checkpoint(rt, cfg.name, cfg, None, kind="sft", rows=train_rows, base=cfg.model, trainer_args=cfg.sft,
                                              lora=cfg.lora, freeze_embeddings=cfg.freeze_embeddings, freeze_layers=cfg.freeze_layers,
                                              note=f"SFT of {cfg.model} on {len(rows)} examples")
        return StageResult(rows=rows, stats=SFTStats(checkpoint=str(out), train_loss=metrics.train_loss, steps=metrics.steps, examples=metrics.examples),
                           moves={cfg.serve_as: str(out)} if cfg.serve_as else {})
