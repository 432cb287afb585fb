"""Run SFT, DPO or classifier (the SKD critic) training in this process, or across N processes under `accelerate launch`.

One process and no accelerate config: `train_sft` / `train_dpo` / `train_classifier` run here, as they always have.
Otherwise the rows and a job spec go to OUT.launch/ (beside the checkpoint, like OUT.tmp), and

    python -m accelerate.commands.launch [--num_processes N ...] [--config_file FILE] -m synthkd.train.worker OUT.launch/job.json

runs as a subprocess synthkd supervises: its output goes to a log file, it is killed with its
process group on Ctrl-C or error (and, through PR_SET_PDEATHSIG, when synthkd itself dies), and a
non-zero exit is an error with the end of the log. Every process trains (DDP, or FSDP / DeepSpeed
from the config file); only the main one writes the checkpoint, in the same layout and with the
same fingerprint as one process would.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthkd.config.stages import LoraArgs
from synthkd.errors import ConfigError, SynthkdError
from synthkd.hashing import digest
from synthkd.jsonl import write_jsonl
from synthkd.records import TrainMetrics
from synthkd.train.common import METRICS_FILE, TRAIN_LOG_FILE, read_metrics
from synthkd.train.examples import (JobSpec, PreferenceExample, SFTExample, TrainingRow, classifier_example, preference_example,
                                    sft_example)

if TYPE_CHECKING:
    from synthkd.skd.critic import ClassifierArgs, LabelledPair
    from synthkd.stages.base import CheckContext

def training_columns(kind: str, row: TrainingRow) -> SFTExample | PreferenceExample | LabelledPair:
    """What training reads of one row, per kind: messages; prompt, chosen, rejected; premise, hypothesis, label (in that
    order), and for sft and dpo `tools` where a row has any. Only these go to the job's rows file and fingerprint."""
    if kind == "sft":
        return sft_example(row)
    if kind == "dpo":
        return preference_example(row)
    if kind == "classifier":
        return classifier_example(row)
    raise KeyError(kind)


@dataclass(frozen=True)
class Job:
    """One training run: what `train_sft` / `train_dpo` / `train_classifier` take, plus how many processes run it.

    The job names its own checkpoint: `fingerprint` is derived from what the weights depend on (the kind, the
    training columns of the rows, the base model as the pipeline names it, the trainer and LoRA arguments, the
    seed, the switches that change the result, and a classifier job's own arguments), never from how training runs (processes, accelerate
    config, log): a checkpoint trained on N processes is reused on M.
    """

    kind: str  # sft | dpo | classifier (the SKD critic: a sequence-pair classifier, synthkd.skd.critic)
    rows: list[TrainingRow]  # the job's rows (other columns they hold are left out of the job's files and fingerprint)
    base_model: str  # as the pipeline names it (a model string, or a checkpoint directory): part of the fingerprint
    out_dir: Path
    trainer_args: dict[str, Any]
    lora: LoraArgs | None
    seed: int
    evaluate_before: bool = False  # dpo only
    processes: int = 1
    accelerate_config: Path | None = None
    log_path: Path | None = None  # default: OUT.train.log beside the checkpoint
    freeze_embeddings: bool = False  # sft only: train_sft's freeze_embeddings
    freeze_layers: int = 0  # sft only: train_sft's freeze_layers
    base_path: str | None = None  # the local weights `base_model` resolves to (None: base_model as it is)
    classifier: ClassifierArgs | None = None  # classifier only (and required there): its arguments and validation items

    def __post_init__(self) -> None:
        if (self.kind == "classifier") != (self.classifier is not None):
            raise ValueError(f"a {self.kind} job {'needs' if self.kind == 'classifier' else 'takes no'} classifier arguments")

    @property
    def distributed(self) -> bool:
        return self.processes > 1 or self.accelerate_config is not None

    @property
    def weights(self) -> str:
        """What training loads."""
        return self.base_path or self.base_model

    @cached_property
    def fingerprint(self) -> str:
        return digest({"kind": self.kind, "rows": [list(training_columns(self.kind, row).values()) for row in self.rows],
                       "base": self.base_model, "args": self.trainer_args, "lora": self.lora, "seed": self.seed,
                       # switches enter only when on, so turning on a new one later leaves older fingerprints as they were
                       **({"freeze_embeddings": True} if self.freeze_embeddings else {}),
                       **({"freeze_layers": self.freeze_layers} if self.freeze_layers else {}),
                       **({"evaluate_before": True} if self.evaluate_before else {}),
                       # the classifier's own arguments: only its jobs have them, so sft and dpo fingerprints are as they were
                       **({"classifier": self.classifier.model_dump()} if self.classifier is not None else {})})


def check_accelerate_config(path: str | None, ctx: "CheckContext") -> None:
    """validate: an `accelerate_config:` names a file that exists (relative to the pipeline file)."""
    if path is not None and not ctx.loaded.resolve(path).is_file():
        raise ConfigError(f"accelerate config {ctx.loaded.resolve(path)} does not exist", where=ctx.where("accelerate_config"),
                          fix="name an accelerate config file (e.g. written by `accelerate config`), relative to the pipeline file")


def train(job: Job) -> TrainMetrics:
    """Train (blocking) and return the metrics. Ctrl-C kills the training processes."""
    if not job.distributed:
        return _in_process(job)
    process, log_path, directory = _start(job)
    try:
        process.wait()
    finally:
        _stop(process)
    return _finish(job, process, log_path, directory)


async def train_async(job: Job) -> TrainMetrics:
    """Train without blocking the event loop; cancelling (Ctrl-C in a pipeline) kills the training processes.

    The subprocess is started from the event loop's thread, not a worker thread, since
    PR_SET_PDEATHSIG fires when the thread that started a child ends.
    """
    if not job.distributed:
        return await asyncio.to_thread(_in_process, job)
    process, log_path, directory = _start(job)
    try:
        while process.poll() is None:
            await asyncio.sleep(0.5)
    finally:
        _stop(process)
    return _finish(job, process, log_path, directory)


def _in_process(job: Job) -> TrainMetrics:
    """Train in this process; the log (what was trained, then the trainer's record step by step, or the error) goes
    where a multi-process run's log goes, so every training run leaves one."""
    log_path = job.log_path or job.out_dir.with_name(job.out_dir.name + ".train.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} synthkd: {job.kind} in this process: {len(job.rows)} rows, "
                  f"base {job.base_model}, out {job.out_dir}, fingerprint {job.fingerprint}\n")
    try:
        metrics = _train_here(job)
    except BaseException as exc:
        with log_path.open("a") as log:
            log.write(f"failed: {type(exc).__name__}: {exc}\n")
        raise
    record = job.out_dir / TRAIN_LOG_FILE
    with log_path.open("a") as log:
        log.write(record.read_text() if record.is_file() else "")
        log.write(f"done: {json.dumps(metrics.to_json(), default=str)}\n")
    return metrics


def _train_here(job: Job) -> TrainMetrics:
    if job.classifier is not None:
        from synthkd.skd.critic import train_from_args

        return train_from_args([classifier_example(row) for row in job.rows], job.weights, job.out_dir, job.classifier, seed=job.seed,
                               fingerprint=job.fingerprint)
    if job.kind == "sft":
        from synthkd.train.sft import train_sft

        return train_sft([sft_example(row) for row in job.rows], job.weights, job.out_dir, sft_args=job.trainer_args, lora=job.lora,
                         seed=job.seed, fingerprint=job.fingerprint, freeze_embeddings=job.freeze_embeddings,
                         freeze_layers=job.freeze_layers)
    from synthkd.train.dpo import train_dpo

    return train_dpo([preference_example(row) for row in job.rows], job.weights, job.out_dir, dpo_args=job.trainer_args, lora=job.lora,
                     seed=job.seed, fingerprint=job.fingerprint, evaluate_before=job.evaluate_before)


def job_dir(out_dir: Path) -> Path:
    """OUT.launch/: the job spec and rows of a multi-process run (kept after a failure, removed after success)."""
    return out_dir.with_name(out_dir.name + ".launch")


def write_job(job: Job) -> Path:
    """Rows (JSONL) and the job spec (JSON) into OUT.launch/; returns the spec's path."""
    directory = job_dir(job.out_dir)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    rows_path = directory / "rows.jsonl"
    write_jsonl(rows_path, (training_columns(job.kind, row) for row in job.rows), default=str)
    base = Path(job.weights)
    spec: JobSpec = {
        "kind": job.kind,
        "rows": str(rows_path.resolve()),
        "base_model": str(base.resolve()) if base.exists() else job.weights,  # a local directory, or a hub name
        "out_dir": str(job.out_dir.resolve()),
        "trainer_args": job.trainer_args,
        "lora": job.lora,
        "seed": job.seed,
        "fingerprint": job.fingerprint,
        "evaluate_before": job.evaluate_before,
        "freeze_embeddings": job.freeze_embeddings,
        "freeze_layers": job.freeze_layers,
    }
    if job.classifier is not None:
        spec["classifier"] = job.classifier.model_dump()
    path = directory / "job.json"
    path.write_text(json.dumps(spec, indent=2, default=str))
    return path


def launch_command(job: Job, spec_path: Path, gpu: bool) -> tuple[list[str], dict[str, str]]:
    """The `accelerate launch` command line and its environment."""
    from synthkd.serve.process import free_port

    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    env = dict(os.environ)
    config = _read_config(job.accelerate_config) if job.accelerate_config is not None else AccelerateSettings()
    if job.accelerate_config is None or job.processes > 1:
        cmd += ["--num_processes", str(job.processes)]  # with a config file and processes 1, its num_processes holds
    if job.accelerate_config is None:
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
        # --multi_gpu is accelerate's torchrun launcher, also on a CPU: `--cpu` would take its
        # single-process launcher (one process, or mpirun with a hostfile). On a CPU-only machine
        # ACCELERATE_USE_CPU makes each process join a gloo group (accelerate's MULTI_CPU).
        if job.processes > 1:
            cmd += ["--multi_gpu"]
    else:
        cmd += ["--config_file", str(job.accelerate_config)]  # as is: FSDP, DeepSpeed, mixed precision
        if not config.names_port and config.num_machines <= 1:
            cmd += ["--main_process_port", str(free_port())]  # not accelerate's fixed 29500: runs side by side do not collide
    processes = job.processes if job.processes > 1 or job.accelerate_config is None else config.num_processes
    if not gpu:
        env["ACCELERATE_USE_CPU"] = "true"
        if "OMP_NUM_THREADS" not in env:  # share the cores out; torchrun's default is 1 thread a process
            threads = max(1, len(os.sched_getaffinity(0)) // max(1, processes))
            cmd += ["--num_cpu_threads_per_process", str(threads)]
    cmd += ["-m", "synthkd.train.worker", str(spec_path)]
    # The workers import this same synthkd, installed or not.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # a log file, not a terminal
    return cmd, env


@dataclass(frozen=True)
class AccelerateSettings:
    """What synthkd reads of an accelerate config file (accelerate itself reads the whole file)."""

    num_processes: int = 1  # 1 where missing or not a number
    num_machines: int = 1
    names_port: bool = False  # whether it sets main_process_port


def _read_config(path: Path) -> AccelerateSettings:
    """The accelerate config's settings synthkd reads (the defaults if unreadable: accelerate itself reports that)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return AccelerateSettings()
    if not isinstance(data, dict):
        return AccelerateSettings()
    return AccelerateSettings(num_processes=_count(data.get("num_processes")), num_machines=_count(data.get("num_machines")),
                              names_port="main_process_port" in data)


def _count(value: Any) -> int:
    """A count from the config file (1 where it is missing or not a number)."""
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


def _gpu_visible() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _start(job: Job) -> tuple[subprocess.Popen[bytes], Path, Path]:
    from synthkd.serve.process import die_with_parent

    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise SynthkdError("accelerate (needed to train on more than one process) is not installed",
                           fix="pip install -e '.[train]' (on a CPU-only machine: make setup)") from None
    spec_path = write_job(job)
    cmd, env = launch_command(job, spec_path, _gpu_visible())
    log_path = job.log_path or job.out_dir.with_name(job.out_dir.name + ".train.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} synthkd: {' '.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True, preexec_fn=die_with_parent)
    return process, log_path, spec_path.parent


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the launcher and every training process it started (one process group), if still running."""
    from synthkd.serve.process import terminate

    terminate(process)


def _finish(job: Job, process: subprocess.Popen[bytes], log_path: Path, directory: Path) -> TrainMetrics:
    from synthkd.serve.process import log_tail

    if process.returncode != 0:
        raise SynthkdError(
            f"{job.kind} training under accelerate ({f'{job.processes} processes' if job.processes > 1 else f'config {job.accelerate_config}'}) "
            f"exited with code {process.returncode}; "
            f"end of {log_path}:\n{log_tail(log_path, 30)}",
            fix=f"read the full log at {log_path} (the job is in {directory})",
        )
    if not (job.out_dir / METRICS_FILE).is_file():
        raise SynthkdError(f"{job.kind} training under accelerate wrote no checkpoint at {job.out_dir}", fix=f"read the log at {log_path}")
    shutil.rmtree(directory, ignore_errors=True)
    return read_metrics(job.out_dir)
