"""Training on 2 processes under `accelerate launch` (DDP over gloo on the CPU): `synthkd train --processes`
and a pipeline `sft` stage with `processes: 2` write the same checkpoint layout as one process."""

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli, run_json

SETS = ["--set", "num_train_epochs=2", "--set", "max_length=64", "--set", "learning_rate=1e-3", "--set", "per_device_train_batch_size=4"]


def _sft_jsonl(path: Path, n: int = 24) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                                     {"role": "assistant", "content": f"It is {2 * i}."}]}) + "\n" for i in range(n)))
    return path


def _layout(checkpoint: Path) -> list[str]:
    return sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*"))


def _pipeline(tmp: Path, **sft_extra: object) -> Path:
    data = {
        "name": "accel",
        "prompts_dir": str(REPO / "prompts"),
        "endpoints": {},
        "stages": [
            {"name": "data", "type": "load", "path": str(_sft_jsonl(tmp / "sft.jsonl", 16))},
            {"name": "sft", "type": "sft", "input": "data", "model": "tiny:student",
             "sft": {"num_train_epochs": 1, "max_length": 64, "per_device_train_batch_size": 4}, **sft_extra},
        ],
    }
    path = tmp / "accel.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.needs_torch
@pytest.mark.needs_trl
@pytest.mark.slow  # real multi-process training (torch.distributed over gloo)
def test_train_sft_on_two_processes_same_layout(tmp_path: Path, synthkd_home: Path) -> None:
    env = {"SYNTHKD_HOME": str(synthkd_home)}
    data = _sft_jsonl(tmp_path / "sft.jsonl")
    one, two = tmp_path / "one", tmp_path / "two"
    proc = run_cli("train", "sft", "--data", str(data), "--model", "tiny:student", "--out", str(one), *SETS, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("train", "sft", "--data", str(data), "--model", "tiny:student", "--out", str(two), *SETS, "--processes", "2", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]

    assert _layout(two) == _layout(one) and "model.safetensors" in _layout(two)
    # Same fingerprint: the process count is how training runs, not what it trains on.
    assert (two / "synthkd_fingerprint.txt").read_text() == (one / "synthkd_fingerprint.txt").read_text()
    m1, m2 = (json.loads((d / "train_metrics.json").read_text()) for d in (one, two))
    assert set(m2) == set(m1) and m2["examples"] == 24
    assert m2["steps"] > 0 and math.isfinite(m2["train_loss"])
    # DDP: each process takes per_device_train_batch_size examples a step, so 2 processes take half the steps.
    assert m1["steps"] == 2 * m2["steps"]
    # Both processes trained, in one gloo group; nothing is left beside the checkpoints but each run's log (one
    # process writes one too: what it trained and the trainer's record, step by step).
    log = (tmp_path / "two.train.log").read_text()
    for rank in (0, 1):
        assert f"process {rank} of world size 2 (MULTI_CPU, backend gloo)" in log, log[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "one.train.log", "sft.jsonl", "two", "two.train.log"]
    assert "in this process: 24 rows" in (tmp_path / "one.train.log").read_text()


@pytest.mark.needs_torch
@pytest.mark.needs_trl
@pytest.mark.slow  # real multi-process training (torch.distributed over gloo)
def test_pipeline_sft_stage_on_two_processes(tmp_path: Path, synthkd_home: Path) -> None:
    env = {"SYNTHKD_HOME": str(synthkd_home)}
    pipeline, out = _pipeline(tmp_path, processes=2), tmp_path / "run"
    proc = run_cli("run", str(pipeline), "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = run_json(out)["stages"]["sft"]
    assert stage["status"] == "done" and stage["steps"] > 0 and stage["examples"] == 16 and math.isfinite(stage["train_loss"])
    checkpoint = out / "checkpoints" / "sft"
    assert stage["checkpoint"] == str(checkpoint)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "train_metrics.json", "synthkd_fingerprint.txt"):
        assert (checkpoint / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["sft"]  # no sft.tmp / sft.launch left
    log = (out / "logs" / "train-sft.log").read_text()
    assert "process 1 of world size 2" in log, log[-3000:]
    # processes is not part of the stage's fingerprint: back on one process, the finished stage is reused.
    proc = run_cli("run", str(pipeline), "--out", str(out), "--set", "stages.sft.processes=1", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[sft] done earlier" in proc.stderr + proc.stdout


@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_missing_accelerate_config_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = run_cli("validate", str(_pipeline(tmp_path, accelerate_config="fsdp.yaml")))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "stages.1.accelerate_config" in lines[0] and f"{tmp_path / 'fsdp.yaml'} does not exist" in lines[0]

    data = _sft_jsonl(tmp_path / "sft.jsonl")
    for args in (["--accelerate-config", str(tmp_path / "fsdp.yaml")], ["--processes", "0"]):
        proc = run_cli("train", "sft", "--data", str(data), "--model", "tiny:student", "--out", str(tmp_path / "x"), *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.needs_torch
@pytest.mark.needs_trl
@pytest.mark.slow  # real multi-process training (torch.distributed over gloo)
def test_train_dpo_with_lora_on_two_processes(tmp_path: Path, synthkd_home: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Name a colour ({i})."}],
                                         "chosen": [{"role": "assistant", "content": "Blue."}],
                                         "rejected": [{"role": "assistant", "content": "I refuse to answer that question."}]}) + "\n" for i in range(16)))
    out = tmp_path / "dpo"
    proc = run_cli("train", "dpo", "--data", str(pairs), "--model", "tiny:student", "--out", str(out), "--processes", "2",
                   "--set", "num_train_epochs=3", "--set", "learning_rate=5e-3", "--set", "max_length=64", "--set", "per_device_train_batch_size=4",
                   "--set", "lora.r=8", "--set", "lora.target_modules=all-linear", env={"SYNTHKD_HOME": str(synthkd_home)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert set(metrics) == {"train_loss", "steps", "pairs", "reward_accuracy", "reward_margin"}
    assert metrics["pairs"] == 16 and metrics["steps"] == 6 and metrics["reward_margin"] > 0  # 16 pairs / (2 x 4) x 3 epochs
    # The main process merged LoRA into full weights: the same plain layout as any checkpoint, no adapter files.
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert "process 1 of world size 2" in (tmp_path / "dpo.train.log").read_text()


@pytest.mark.needs_torch
@pytest.mark.needs_trl
@pytest.mark.slow  # real multi-process training (torch.distributed over gloo)
def test_pipeline_accelerate_config_passed_as_is(tmp_path: Path, synthkd_home: Path) -> None:
    # A DDP config as `accelerate config` writes it; with no `processes:` its num_processes holds.
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump({
        "compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU", "num_machines": 1, "num_processes": 2,
        "mixed_precision": "no", "machine_rank": 0, "gpu_ids": "all", "rdzv_backend": "static", "same_network": True, "use_cpu": False}))
    pipeline, out = _pipeline(tmp_path, accelerate_config="ddp.yaml"), tmp_path / "run"  # relative to the pipeline file
    proc = run_cli("run", str(pipeline), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run_json(out)["stages"]["sft"]["steps"] == 2  # 16 examples / (2 processes x 4), 1 epoch
    log = (out / "logs" / "train-sft.log").read_text()
    assert f"--config_file {tmp_path / 'ddp.yaml'}" in log and "--num_processes" not in log
    assert "process 1 of world size 2" in log, log[-3000:]
