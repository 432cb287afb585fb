"""TRL SFT of a causal LM on a `messages` dataset; the YAML `sft:` block goes to SFTConfig as is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthkd.config.stages import LoraArgs
from synthkd.records import TrainMetrics
from synthkd.train.common import own_defaults, check_trainer_args, freeze_lowest_layers, load_for_training, lora_config, save_checkpoint, scratch_dir
from synthkd.tools.wire import ToolSchema
from synthkd.train.examples import PromptCompletion, SFTExample, TokenizedExample, sft_example

__all__ = ["train_sft", "check_sft_args"]


def check_sft_args(args: dict[str, Any], where: str, accepted: Path | None = None) -> None:
    check_trainer_args("SFTConfig", args, where, accepted)


def training_examples(rows: list[SFTExample], completion_only: bool, assistant_only: bool = False,
                      tokenizer: Any = None) -> list[SFTExample] | list[PromptCompletion] | list[TokenizedExample]:
    """TRL examples from `messages` rows. With `completion_only_loss: true` in the sft block, each
    conversation becomes TRL's prompt/completion form (all turns but the last / the last assistant
    turn), so the loss falls on the answer only, as MiniLLM and DistiLLM train; TRL applies
    completion_only_loss to that form and ignores it for plain `messages`. With `assistant_only_loss: true`,
    every assistant turn of a conversation is trained on and nothing else: synthkd tokenizes each conversation
    with its mask (`synthkd.train.masking`), for any chat template, with or without TRL's generation markers
    (a row's `tools` column goes to the template)."""
    rows = _with_tools_rendered(rows, tokenizer)
    if assistant_only:
        from synthkd.train.masking import assistant_masked

        return [assistant_masked(tokenizer, r["messages"], _tools(r.get("tools"))) for r in rows]
    if not completion_only:
        return [sft_example(r) for r in rows]  # TRL's conversational form
    out: list[PromptCompletion] = []
    for r in rows:
        messages = r["messages"]
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError("completion_only_loss needs conversations that end with an assistant turn")
        out.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return out


def _with_tools_rendered(rows: list[SFTExample], tokenizer: Any) -> list[SFTExample]:
    """Rows with tool calls, for a student whose chat template cannot write them: rewritten as plain chat
    (`masking.plain_tool_messages`), so no tool call is silently dropped by the template."""
    from synthkd.train.masking import plain_tool_messages, renders_tools

    if tokenizer is None or renders_tools(tokenizer):
        return rows
    has_tools = any(m.get("tool_calls") or m.get("role") == "tool" for r in rows for m in r["messages"])
    if not has_tools:
        return rows
    return [{**r, "messages": plain_tool_messages(r["messages"], _tools(r.get("tools"))), "tools": None} for r in rows]


def _tools(value: list[ToolSchema] | str | None) -> list[ToolSchema] | None:
    """A row's `tools`: a list of schemas, or JSON text of one (as the tool_use stage writes it, and TRL reads it)."""
    if isinstance(value, str):
        parsed: list[ToolSchema] | None = json.loads(value) if value.strip() else None
        return parsed
    return value or None


def _trainer_class(config: Any) -> Any:
    """TRL's SFTTrainer, or on a machine without a GPU a subclass that takes the plain NLL loss from the model.

    Why: TRL 1.x scores only the answer tokens through a tiled "fused LM head" (log-probs, entropy and top-1 per
    tile) to save GPU memory. On the CPU that kernel is slower than the model's own loss over full logits: for
    the earlier demo's 10-layer SmolLM2 student (49k vocabulary, batches of 8 teacher answers of up to 64 tokens) a
    step took 3.68 s with it and 2.75 s without, with the same loss; `benchmarks/sft_step.py` (shorter templated
    answers, loading and saving included) prints 2.42 against 2.10 s. Where the model allows it the subclass also
    runs the output head on the answer positions only (`synthkd.models.heads`, checked once per model against the
    full forward): on the demo's 20-layer student and its teacher's answers 6 steps took 43.9 s with full logits and
    40.2 s without, the same loss. The subclass is used only where the two losses are the same: the plain NLL
    without label smoothing or a custom loss function; it does not log TRL's entropy and token accuracy.
    """
    import torch
    from transformers import Trainer
    from trl import SFTTrainer

    from synthkd.models.heads import answer_head

    if torch.cuda.is_available() or config.loss_type != "nll" or config.label_smoothing_factor or config.padding_free or config.packing:
        return SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):  # type: ignore[misc,valid-type]
        def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            if self.compute_loss_func is not None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # transformers' own compute_loss: the model's loss, with its token averaging across accumulation steps;
            # where the model allows it, the output head runs on the answer positions only (synthkd.models.heads)
            keep = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids", "labels")}
            forward = model
            if not return_outputs and "labels" in keep:
                forward = answer_head(model, keep["input_ids"], keep.get("attention_mask")) or model
            return Trainer.compute_loss(self, forward, {**keep, "use_cache": False}, return_outputs, num_items_in_batch)

    return PlainLossSFTTrainer


def train_sft(
    rows: list[SFTExample],
    base_model: str,
    out_dir: Path,
    *,
    sft_args: dict[str, Any],
    lora: LoraArgs | None,
    seed: int,
    fingerprint: str,
    freeze_embeddings: bool = False,
    freeze_layers: int = 0,
) -> TrainMetrics:
    """Fine-tune `base_model` on rows with a `messages` column; save model + tokenizer to out_dir.

    freeze_embeddings: the input embeddings (and an output head tied to them) are not trained: a depth-pruned
    student keeps its source's embeddings intact, only its layers must heal, and the 49k x 576 matrix's gradient
    and Adam state are a large share of a small model's step. freeze_layers: nor the lowest N transformer layers (the
    backward pass stops above them)."""
    from datasets import Dataset
    from trl import SFTConfig

    tmp = scratch_dir(out_dir)
    seed = int(sft_args.get("seed", seed))  # a `seed:` in the YAML block wins over the pipeline's
    model, tokenizer = load_for_training(base_model, seed)
    if freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if freeze_layers:
        freeze_lowest_layers(model, freeze_layers)
    assistant_only = bool(sft_args.get("assistant_only_loss"))
    dataset = Dataset.from_list(training_examples(rows, bool(sft_args.get("completion_only_loss")), assistant_only, tokenizer))
    # assistant_only_loss: the masks come with the rows (TRL folds `assistant_masks` into the labels), so TRL is not
    # asked to find generation markers the student's template may not have.
    config = SFTConfig(output_dir=str(tmp / "trainer"), **{**own_defaults(), **sft_args, "seed": seed, "assistant_only_loss": False})
    trainer = _trainer_class(config)(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(lora))
    result = trainer.train()
    metrics = TrainMetrics(train_loss=float(result.training_loss), steps=int(result.global_step), examples=len(rows))
    save_checkpoint(trainer, tokenizer, tmp, out_dir, metrics, fingerprint, merged_lora=lora is not None)
    return metrics
