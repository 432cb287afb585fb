"""`synthkd train sft|dpo`: train from any dataset synthkd wrote (or any `datasets` directory or JSONL
in TRL's formats) without a pipeline, with the same passthrough and checkpoint layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthkd import yamlio

from synthkd.records import TrainMetrics
from synthkd.config.stages import LoraArgs
from synthkd.errors import ConfigError
from synthkd.stages.load import read_records
from synthkd.train.common import FINGERPRINT_FILE

REQUIRED = {"sft": {"messages"}, "dpo": {"prompt", "chosen", "rejected"}}


def parse_sets(assignments: list[str]) -> tuple[dict[str, Any], LoraArgs | None, int]:
    """--set key=value pairs -> (trainer config kwargs, LoRA kwargs or None, seed)."""
    trainer: dict[str, Any] = {}
    lora: LoraArgs | None = None
    seed = 0
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} has no '='", fix="write --set key=value, e.g. --set learning_rate=2e-5 or --set lora.r=16")
        key, raw = item.split("=", 1)
        value = yamlio.load(raw) if raw.strip() else ""
        if key == "seed":
            seed = int(value)
        elif key.startswith("lora."):
            lora = LoraArgs(**{**(lora or {}), key.removeprefix("lora."): value})
        elif key == "lora" and value in (None, "null"):
            lora = None
        else:
            trainer[key] = value
    return trainer, lora, seed


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Training replaces `out` as a whole: refuse a file, or a non-empty directory that is not a synthkd
    checkpoint (the user's own files), unless `overwrite` says to replace it."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", where="--out", fix="pass a directory path for the checkpoint")
    if out.is_dir() and not overwrite and any(out.iterdir()) and not (out / FINGERPRINT_FILE).is_file():
        raise ConfigError(f"--out {out} holds files that are not a synthkd checkpoint; training would replace the directory",
                          where="--out", fix="pass a new or empty directory, or add --overwrite to replace it")


def run_train(kind: str, data: Path, model: str, out: Path, assignments: list[str], tiny_home: Path,
              processes: int = 1, accelerate_config: Path | None = None, overwrite: bool = False) -> TrainMetrics:
    """Train and return the metrics; the checkpoint goes to `out` (servable by vLLM as it is).

    processes > 1 or an accelerate config: training runs under `accelerate launch` (log: OUT.train.log).
    A finished checkpoint at `out` is replaced; anything else there only with `overwrite`.
    """
    if kind not in REQUIRED:
        raise ConfigError(f"unknown training kind {kind!r}", fix="use `synthkd train sft` or `synthkd train dpo`")
    rows = read_records(data, "--data")
    if not rows:
        raise ConfigError(f"{data} has no rows", where="--data", fix="point --data at a non-empty dataset")
    missing = sorted(REQUIRED[kind] - set(rows[0]))
    if missing:
        raise ConfigError(
            f"{data} has no column(s) {', '.join(missing)} (it has: {', '.join(sorted(rows[0]))})",
            where="--data", fix=f"{kind} needs {', '.join(sorted(REQUIRED[kind]))} (TRL's {'conversational SFT' if kind == 'sft' else 'preference'} format)",
        )
    if processes < 1:
        raise ConfigError(f"--processes {processes} is not a number of processes", where="--processes", fix="pass 1 or more")
    check_out_dir(out, overwrite)
    if accelerate_config is not None and not accelerate_config.is_file():
        raise ConfigError(f"accelerate config {accelerate_config} does not exist", where="--accelerate-config",
                          fix="pass an accelerate config file (e.g. written by `accelerate config`)")
    trainer_args, lora, seed = parse_sets(assignments)
    if kind == "sft":
        from synthkd.train.sft import check_sft_args as check
    else:
        from synthkd.train.dpo import check_dpo_args as check  # type: ignore[assignment]
    from synthkd.models import resolve_model
    from synthkd.train.examples import training_row
    from synthkd.train.launch import Job, train

    check(trainer_args, "--set")  # first: a bad --set (or no TRL) fails before a model is built or converted
    base = resolve_model(model, tiny_home, Path.cwd(), where="--model")
    return train(Job(kind, [training_row(row) for row in rows], model, out, trainer_args, lora, seed, processes=processes, base_path=base,
                     accelerate_config=accelerate_config.resolve() if accelerate_config else None))
