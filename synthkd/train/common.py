"""What SFT and DPO training share: config passthrough checks, atomic checkpoints, fingerprints.

A checkpoint directory holds transformers weights + tokenizer (servable by vLLM as they are),
`train_metrics.json`, and `synthkd_fingerprint.txt` written last: its presence with the expected
content means the checkpoint is whole and was trained from exactly these inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from synthkd.config.stages import LoraArgs
from synthkd.errors import ConfigError
from synthkd.records import TrainMetrics

if TYPE_CHECKING:
    import torch

FINGERPRINT_FILE = "synthkd_fingerprint.txt"
METRICS_FILE = "train_metrics.json"


class TrainerDefaults(TypedDict):
    """The trainer config values synthkd sets unless the YAML block sets them (TRL config field names)."""

    report_to: list[str]
    save_strategy: str
    logging_steps: int
    disable_tqdm: bool
    bf16: NotRequired[bool]  # off on a machine without a GPU
    gradient_checkpointing: NotRequired[bool]  # off on a machine without a GPU


# Defaults synthkd sets for its own bookkeeping; anything in the YAML block wins.
_BOOKKEEPING: TrainerDefaults = {"report_to": [], "save_strategy": "no", "logging_steps": 10, "disable_tqdm": True}


def own_defaults() -> TrainerDefaults:
    """synthkd's defaults for a trainer config. On a machine without a GPU also bf16 off, which TRL
    otherwise turns on and then refuses ("Your setup doesn't support bf16/gpu"), and gradient checkpointing off,
    which TRL 1.x turns on to save GPU memory: on the CPU it recomputes every layer's forward in the backward pass
    for memory a small student does not need (the demo's step: 8.2 s with it, 7.3 s without)."""
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    defaults = _BOOKKEEPING.copy()
    if not gpu:
        defaults["bf16"] = False
        defaults["gradient_checkpointing"] = False
    return defaults


TRAIN_LOG_FILE = "train_log.jsonl"


def checkpoint_done(out_dir: Path, fingerprint: str) -> bool:
    marker = out_dir / FINGERPRINT_FILE
    return marker.is_file() and marker.read_text().strip() == fingerprint


def check_trainer_args(config_class_name: str, args: dict[str, Any], where: str, accepted: Path | None = None) -> None:
    """Fail before any call if a `sft:`/`dpo:` block names a key the TRL config does not have, or a bad value.

    `accepted`: a file of the argument sets this check passed before, with the same TRL, transformers,
    torch and peft versions on a machine with the same GPU presence; a set found there is not checked
    again. The check builds the TRL config, which imports transformers and torch: 4-5 s of every
    `synthkd validate` and `run` on a CPU, for an answer that cannot have changed.
    """
    key = _accepted_key(config_class_name, args) if accepted is not None else None
    if key is None or accepted is None:
        _check_trainer_args(config_class_name, args, where)
    elif key not in _read_accepted(accepted):
        _check_trainer_args(config_class_name, args, where)
        _remember_accepted(accepted, key)


def _accepted_key(config_class_name: str, args: dict[str, Any]) -> str | None:
    """What the check's answer depends on; None where TRL is not installed (then the check always runs)."""
    versions = {name: _version(name) for name in ("trl", "transformers", "torch", "peft", "accelerate")}
    if versions["trl"] is None:
        return None
    blob = json.dumps({"config": config_class_name, "args": args, "versions": versions, "gpu": shutil.which("nvidia-smi") is not None,
                       "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "python": sys.version_info[:2]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _read_accepted(path: Path) -> set[str]:
    try:
        return set(path.read_text(encoding="utf-8").split())
    except OSError:
        return set()


def _remember_accepted(path: Path, key: str) -> None:
    """Add `key` (atomic rename; a lost update only means the check runs once more); never fails the run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(_read_accepted(path) | {key})
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(keys) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def _check_trainer_args(config_class_name: str, args: dict[str, Any], where: str) -> None:
    try:
        import trl
    except ImportError:  # training extras not installed: training would fail after paid calls
        block = "dpo" if config_class_name.startswith("DPO") else "sft"
        needed_by = f"`synthkd train {block}`" if where.startswith("--") else f"training with this `{block}:` block"
        raise ConfigError(
            f"TRL (needed by {needed_by}) is not installed",
            where=where,
            fix="pip install -e '.[train]' (on a CPU-only machine: make setup)",
        ) from None
    config_class = getattr(trl, config_class_name)
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(
            f"unknown {config_class_name} key(s): {', '.join(unknown)}",
            where=where,
            fix=f"use field names of trl.{config_class_name} (e.g. num_train_epochs, learning_rate, per_device_train_batch_size)",
        )
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for key, value in args.items():
        default = fields[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool) and not isinstance(value, (int, float)) and value is not None:
            raise ConfigError(f"{config_class_name}.{key} must be a number, got {value!r}", where=f"{where}.{key}", fix="write a number, e.g. 2.0e-5")
    # Build the config once, so bad values (a string learning rate, bf16 on a CPU) fail now, not after paid calls.
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config_class(output_dir=tmp, **{**own_defaults(), **args})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid {config_class_name}: {str(exc).splitlines()[0][:300]}", where=where, fix="fix that value") from None


def load_for_training(base_model: str, seed: int) -> tuple[Any, Any]:
    """(model, tokenizer) of base weights, seeded; float32 on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    dtype = "auto" if torch.cuda.is_available() else torch.float32
    return AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype), tokenizer


def freeze_lowest_layers(model: Any, n: int) -> None:
    """Stop training the lowest `n` transformer layers of a causal LM (its decoder's `layers`)."""
    decoder = model.get_decoder() if callable(getattr(model, "get_decoder", None)) else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ConfigError(f"freeze_layers: {n}: {type(model).__name__} has no list of decoder layers synthkd can find",
                          fix="set freeze_layers: 0 for this model")
    if n > len(layers):
        raise ConfigError(f"freeze_layers: {n} is more than the model's {len(layers)} layers", fix=f"set freeze_layers to at most {len(layers)}")
    for layer in layers[:n]:
        layer.requires_grad_(False)


def lora_config(lora: LoraArgs | None) -> Any:
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", **lora)


def scratch_dir(out_dir: Path) -> Path:
    """OUT.tmp, emptied: where a checkpoint is written before it is moved into place. Under
    `accelerate launch` only the main process (RANK 0; torchrun sets RANK) empties it."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if is_main_rank():
        shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def is_main_rank() -> bool:
    """Whether this process is the main one (always, outside `accelerate launch` / torchrun)."""
    return os.environ.get("RANK", "0") == "0"


def save_checkpoint(trainer: Any, tokenizer: Any, tmp: Path, out_dir: Path, metrics: TrainMetrics, fingerprint: str, merged_lora: bool) -> None:
    """Save the trained model (LoRA merged into full weights) and move it into place atomically.

    Under `accelerate launch` every process trains; only the main one writes the checkpoint, and
    every process waits until it is written (so none exits, and tears the group down, before that).
    The layout is the same for one process and for N.
    """
    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    state_dict = _gathered_state_dict(trainer)  # FSDP / DeepSpeed: a collective, so every process calls it
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(trainer.model)  # the model itself, outside any DDP wrapper
        if merged_lora and state_dict is not None:
            model, state_dict = _merged_from_gathered(model, state_dict), None
        elif merged_lora:
            model = model.merge_and_unload()  # full weights: vLLM serves them like any model
        model.save_pretrained(str(tmp), safe_serialization=True, **({"state_dict": state_dict} if state_dict is not None else {}))
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        write_metrics(tmp, metrics)
        # The trainer's own record, step by step (loss, learning rate, grad norm): what the run's log shows.
        (tmp / TRAIN_LOG_FILE).write_text("".join(json.dumps(entry, default=str) + "\n" for entry in trainer.state.log_history))
        (tmp / FINGERPRINT_FILE).write_text(fingerprint)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out_dir)
    accelerator.wait_for_everyone()


def _gathered_state_dict(trainer: Any) -> dict[str, torch.Tensor] | None:
    """The full weights gathered from every process where the model is sharded (FSDP, DeepSpeed);
    None where the main process holds the whole model (one process, DDP)."""
    from accelerate.utils import DistributedType

    if trainer.accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return None
    # FSDP needs state_dict_type FULL_STATE_DICT, ZeRO-3 stage3_gather_16bit_weights_on_model_save
    # in the accelerate config; accelerate raises and says so otherwise.
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def _merged_from_gathered(model: Any, state_dict: dict[str, torch.Tensor]) -> Any:
    """LoRA merged into full weights, from the gathered weights of a sharded PEFT model (which cannot
    merge in place): the PEFT model is rebuilt on the main process from its base and merged there."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    peft_config = model.peft_config["default"]
    base = AutoModelForCausalLM.from_pretrained(peft_config.base_model_name_or_path, dtype="auto")
    fresh = get_peft_model(base, peft_config)
    fresh.load_state_dict(state_dict, strict=False)
    return fresh.merge_and_unload()


def write_metrics(out_dir: Path, metrics: TrainMetrics) -> None:
    """train_metrics.json of a checkpoint being written."""
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics.to_json()))


def read_metrics(out_dir: Path) -> TrainMetrics:
    """A checkpoint's training metrics (empty where it has none)."""
    path = out_dir / METRICS_FILE
    return TrainMetrics.model_validate_json(path.read_text()) if path.is_file() else TrainMetrics()
