"""`synthkd train sft|dpo` on datasets in TRL's formats, and a Lion run with its DPO phase (tiny models, CPU)."""

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from tests.conftest import lion_pipeline, read_rows, run_cli, run_json
from tests.fakeserver import running_server


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_train_sft_then_dpo_with_lora(tmp_path: Path, synthkd_home: Path) -> None:
    env = {"SYNTHKD_HOME": str(synthkd_home)}
    sft = _write_jsonl(tmp_path / "sft.jsonl", [
        {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": f"It is {2 * i}."}]} for i in range(24)
    ])
    # No --set bf16=false: on a machine without a GPU synthkd turns TRL's bf16 default off itself.
    proc = run_cli("train", "sft", "--data", str(sft), "--model", "tiny:student", "--out", str(tmp_path / "sft_ckpt"),
                   "--set", "num_train_epochs=2", "--set", "max_length=64", "--set", "learning_rate=1e-3", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "sft_ckpt" / "train_metrics.json").read_text())
    assert metrics["examples"] == 24 and metrics["steps"] > 0
    for name in ("model.safetensors", "config.json", "tokenizer.json", "synthkd_fingerprint.txt"):
        assert (tmp_path / "sft_ckpt" / name).is_file(), name

    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": [{"role": "user", "content": f"Name a colour ({i})."}], "chosen": [{"role": "assistant", "content": "Blue."}],
         "rejected": [{"role": "assistant", "content": "I refuse to answer that question."}]} for i in range(16)
    ])
    proc = run_cli("train", "dpo", "--data", str(pairs), "--model", str(tmp_path / "sft_ckpt"), "--out", str(tmp_path / "dpo_ckpt"),
                   "--set", "num_train_epochs=3", "--set", "learning_rate=5e-3", "--set", "bf16=false", "--set", "max_length=64",
                   "--set", "lora.r=8", "--set", "lora.target_modules=all-linear", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "dpo_ckpt" / "train_metrics.json").read_text())
    assert metrics["pairs"] == 16 and metrics["reward_accuracy"] > 0.5 and metrics["reward_margin"] > 0
    # LoRA was merged: the checkpoint is plain weights vLLM can serve, no adapter files.
    assert (tmp_path / "dpo_ckpt" / "model.safetensors").is_file()
    assert not (tmp_path / "dpo_ckpt" / "adapter_config.json").exists()


@pytest.mark.needs_trl  # its second half checks an SFTConfig key
def test_train_rejects_wrong_format(tmp_path: Path) -> None:
    sft = _write_jsonl(tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    proc = run_cli("train", "dpo", "--data", str(sft), "--model", "tiny:student", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no column(s) chosen, prompt, rejected" in proc.stderr and "--data" in proc.stderr
    proc = run_cli("train", "sft", "--data", str(sft), "--model", "tiny:student", "--out", str(tmp_path / "x"), "--set", "epochs=3")
    assert proc.returncode == 2 and "unknown SFTConfig key(s): epochs" in proc.stderr


def test_train_does_not_replace_a_directory_of_the_users(tmp_path: Path) -> None:
    """`synthkd train --out DIR` used to delete whatever DIR held. A non-empty directory that is not a
    synthkd checkpoint, or a file, is refused (one line, exit 2) before any model is built."""
    sft = _write_jsonl(tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (tmp_path / "afile").write_text("x")
    for out, fragment in ((mine, "--overwrite"), (tmp_path / "afile", "is a file")):
        proc = run_cli("train", "sft", "--data", str(sft), "--model", "tiny:student", "--out", str(out))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert fragment in proc.stderr and "--out" in proc.stderr
    assert (mine / "notes.txt").read_text() == "my notes" and (tmp_path / "afile").read_text() == "x"


@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_lion_dpo_phase_uses_discrimination_pairs(tmp_path: Path, synthkd_home: Path) -> None:
    dpo = {"num_train_epochs": 1, "per_device_train_batch_size": 4, "max_length": 128, "bf16": False, "beta": 0.1}
    with running_server() as server:
        pipeline = lion_pipeline(tmp_path, server.base_url, n_seeds=16, train=True, dpo=dpo, tau=0.0)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    first = run_json(out)["stages"]["lion"]["iterations"][0]
    prefs = read_rows(out, "lion.iter1.preference")
    # tau=0: every judged instruction where the teacher is not worse becomes a pair; DPO trained on exactly those.
    assert first["dpo_pairs"] == len(prefs) == sum(1 for r in read_rows(out, "lion.iter1.discrimination") if r["gap"] >= 0) > 0
    assert first["dpo"]["pairs"] == len(prefs)
    assert (out / "checkpoints" / "lion" / "iter1-dpo" / "model.safetensors").is_file()
    ds = load_from_disk(str(out / "datasets" / "lion.iter1.preference"))
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)
