"""TRL SFT of a causal LM on a `messages` dataset; the YAML `sft:` block goes to SFTConfig as is.

Checkpoints are written atomically (temporary directory, then rename) with a fingerprint file, so
a killed run either has the finished checkpoint or retrains it, and a served checkpoint names its
own identity in the request cache.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from synthkd.errors import ConfigError

FINGERPRINT_FILE = "synthkd_fingerprint.txt"

# Defaults synthkd sets for its own bookkeeping; anything in the YAML `sft:` block wins.
_OWN_DEFAULTS: dict[str, Any] = {"report_to": [], "save_strategy": "no", "logging_steps": 10, "disable_tqdm": True}


def checkpoint_done(out_dir: Path, fingerprint: str) -> bool:
    marker = out_dir / FINGERPRINT_FILE
    return marker.is_file() and marker.read_text().strip() == fingerprint


def check_sft_args(args: dict[str, Any], where: str) -> None:
    """Fail before any call if the `sft:` block names a key SFTConfig does not have."""
    try:
        from trl import SFTConfig
    except ImportError:  # training extras not installed: checked again when training starts
        return
    known = {f.name for f in dataclasses.fields(SFTConfig)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(
            f"unknown SFTConfig key(s): {', '.join(unknown)}",
            where=where,
            fix="use field names of trl.SFTConfig (e.g. num_train_epochs, learning_rate, per_device_train_batch_size)",
        )


def train_sft(
    rows: list[dict[str, Any]],
    base_model: str,
    out_dir: Path,
    *,
    sft_args: dict[str, Any],
    lora: dict[str, Any] | None,
    seed: int,
    fingerprint: str,
) -> dict[str, Any]:
    """Fine-tune `base_model` on rows with a `messages` column; save model + tokenizer to out_dir."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32 if not torch.cuda.is_available() else "auto")
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows])
    config = SFTConfig(output_dir=str(tmp / "trainer"), seed=seed, **{**_OWN_DEFAULTS, **sft_args})
    peft_config = None
    if lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="CAUSAL_LM", **lora)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    result = trainer.train()
    trained = trainer.model
    if lora is not None:
        trained = trained.merge_and_unload()  # full weights: vLLM serves them like any model
    trained.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    metrics = {"train_loss": float(result.training_loss), "steps": int(result.global_step), "examples": len(rows)}
    (tmp / "train_metrics.json").write_text(json.dumps(metrics))
    (tmp / FINGERPRINT_FILE).write_text(fingerprint)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out_dir)
    return metrics


def read_metrics(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "train_metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}
