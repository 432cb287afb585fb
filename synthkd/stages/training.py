"""The one way a stage trains a checkpoint: a `Job` through the supervised launcher.

Every stage that trains (sft, dpo, lion, skd, montessori) calls `train_checkpoint`: the job derives its own
fingerprint, a checkpoint already trained with that fingerprint is reused, `processes` and
`accelerate_config` (the stage's launch block) decide whether training runs here or under `accelerate
launch`, and every run leaves its log at RUN_DIR/logs/train-<stage>-<tag>.log.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from synthkd.config.stages import LoraArgs, TrainingLaunch
from synthkd.records import Record, TrainMetrics, plain_rows
from synthkd.stages.base import checkpoint_dir
from synthkd.train.common import checkpoint_done, read_metrics
from synthkd.train.examples import training_row
from synthkd.train.launch import Job, train_async

if TYPE_CHECKING:
    from synthkd.runtime import Runtime
    from synthkd.skd.critic import ClassifierArgs


async def train_checkpoint(rt: "Runtime", stage: str, launch: TrainingLaunch, tag: str | None, *, kind: str,
                           rows: Sequence[Record | Mapping[str, Any]], base: str, trainer_args: dict[str, Any], lora: LoraArgs | None,
                           freeze_embeddings: bool = False, freeze_layers: int = 0, evaluate_before: bool = False, classifier: ClassifierArgs | None = None,
                           note: str = "") -> tuple[Path, TrainMetrics]:
    """Train (unless done) RUN_DIR/checkpoints/<stage>[/<tag>] from `base` (a model string or a checkpoint) on `rows`;
    returns (checkpoint, its metrics). `classifier`: the arguments of a kind="classifier" job (the SKD critic).
    `note` is what the progress line says when training starts."""
    out = checkpoint_dir(rt, stage, *([tag] if tag else []))
    job = Job(kind, [training_row(row) for row in plain_rows(rows)], base, out, trainer_args, lora, rt.config.seed, evaluate_before=evaluate_before,
              processes=launch.processes, freeze_embeddings=freeze_embeddings, freeze_layers=freeze_layers, classifier=classifier,
              accelerate_config=rt.pipeline.resolve(launch.accelerate_config) if launch.accelerate_config else None,
              log_path=rt.run_dir / "logs" / f"train-{stage}{f'-{tag}' if tag else ''}.log")
    if checkpoint_done(out, job.fingerprint):
        rt.reporter.note(f"[{stage}] {kind.upper()} checkpoint already trained ({out})")
    else:
        if note:
            rt.reporter.note(f"[{stage}] {note}")
        await train_async(_resolved(rt, job))
    return out, read_metrics(out)


def _resolved(rt: "Runtime", job: Job) -> Job:
    """The job with its base model resolved to local weights (a GGUF converted, a pruned model built), only when
    training is due: a reused checkpoint needs nothing built."""
    from dataclasses import replace

    return replace(job, base_path=rt.servers.resolve_model_path(job.base_model))
