"""TRL DPO of a causal LM on `prompt`/`chosen`/`rejected` pairs; the YAML `dpo:` block goes to DPOConfig as is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthkd.config.stages import LoraArgs
from synthkd.records import TrainMetrics
from synthkd.train.common import own_defaults, check_trainer_args, load_for_training, lora_config, save_checkpoint, scratch_dir
from synthkd.train.examples import PreferenceExample


def check_dpo_args(args: dict[str, Any], where: str, accepted: Path | None = None) -> None:
    check_trainer_args("DPOConfig", args, where, accepted)


def train_dpo(
    rows: list[PreferenceExample],
    base_model: str,
    out_dir: Path,
    *,
    dpo_args: dict[str, Any],
    lora: LoraArgs | None,
    seed: int,
    fingerprint: str,
    evaluate_before: bool = False,
) -> TrainMetrics:
    """DPO of `base_model` (also the frozen reference) on preference rows; save to out_dir.

    Metrics: train loss and steps, and the implicit-reward accuracy and margin on the training
    pairs after training (how often, and by how much, the policy now prefers `chosen`).
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tmp = scratch_dir(out_dir)
    seed = int(dpo_args.get("seed", seed))  # a `seed:` in the YAML block wins over the pipeline's
    model, tokenizer = load_for_training(base_model, seed)
    pairs: list[PreferenceExample] = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]  # no tools
    dataset = Dataset.from_list(pairs)
    config = DPOConfig(output_dir=str(tmp / "trainer"), **{**own_defaults(), **dpo_args, "seed": seed})
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, eval_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(lora))
    before = trainer.evaluate() if evaluate_before else None
    result = trainer.train()
    evaluation = trainer.evaluate()
    metrics = TrainMetrics(train_loss=float(result.training_loss), steps=int(result.global_step), pairs=len(rows),
                           reward_accuracy=_metric(evaluation, "rewards/accuracies"), reward_margin=_metric(evaluation, "rewards/margins"))
    if before is not None:  # measured with the policy still equal to the reference
        metrics.reward_accuracy_before = _metric(before, "rewards/accuracies")
        metrics.reward_margin_before = _metric(before, "rewards/margins")
    save_checkpoint(trainer, tokenizer, tmp, out_dir, metrics, fingerprint, merged_lora=lora is not None)
    return metrics


def _metric(evaluation: dict[str, float], name: str) -> float | None:
    """One of `trainer.evaluate()`'s figures (the `eval_`-prefixed key or the bare one), or None where it has none."""
    for key in (f"eval_{name}", name):
        if key in evaluation:
            return float(evaluation[key])
    return None
