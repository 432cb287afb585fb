"""A served, trainable student without vLLM: `tests/hfserver.py` behind `serve.command` (conftest `hf_served`).

The fast tier's way to cover what a run does around a served student (start it, train it, move it onto the
checkpoint, ask it, stop it) in seconds; vLLM itself is covered by the slow tests (tests/test_e2e_vllm.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, hf_served, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server


def _pipeline(tmp: Path, teacher_url: str, reload_weights: bool | None = None) -> Path:
    """load 16 instructions (some with gold) -> teacher answers -> eval of the base student -> SFT of tiny:student,
    served as `student` -> eval of the trained student (greedy both times). With `reload_weights`, the SFT keeps the
    embeddings (tied in tiny:student): a `serve.command` server reloads only weights that leave tied embeddings as
    they were (serve/reload.py)."""
    data = {
        "name": "hfserve",
        "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": remote_endpoint(teacher_url, "teacher"), "student": hf_served("tiny:student", reload_weights=reload_weights)},
        "stages": [
            {"name": "seeds", "type": "load", "path": str(REPO / "data" / "distill" / "pool.jsonl"), "limit": 16},
            {"name": "answers", "type": "generate", "input": "seeds", "endpoint": "teacher",
             "template": "lion/answer.jinja2", "sampling": {"max_tokens": 48, "seed": 7}},
            {"name": "base_eval", "type": "eval", "input": "seeds", "teacher": None, "answer_sampling": {"temperature": 0.0, "max_tokens": 24}},
            {"name": "sft", "type": "sft", "input": "answers", "model": "tiny:student", "serve_as": "student", "freeze_embeddings": bool(reload_weights),
             "sft": {"max_steps": 3, "per_device_train_batch_size": 4, "completion_only_loss": True,
                     "max_length": 128, "learning_rate": 1e-2, "bf16": False}},
            {"name": "eval", "type": "eval", "input": "seeds", "teacher": None, "gold_column": "gold",
             "answer_sampling": {"temperature": 0.0, "max_tokens": 24}},
        ],
    }
    path = tmp / "hfserve.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _servers_on(port: int) -> list[int]:
    """Ids of processes running tests/hfserver.py on `port`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # not a process, or it ended meanwhile
            continue
        if any(a.endswith("hfserver.py") for a in args) and str(port) in args:
            found.append(int(proc.name))
    return found


@pytest.mark.needs_torch
@pytest.mark.needs_trl
@pytest.mark.parametrize("reload_weights", [False, True], ids=["restart", "reload"])
def test_served_student_trained_then_asked_on_its_checkpoint(tmp_path: Path, synthkd_home: Path, reload_weights: bool) -> None:
    out = tmp_path / "run"
    with running_server() as teacher:
        proc = run_cli("run", str(_pipeline(tmp_path, teacher.base_url, reload_weights)), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    stages = run_json(out)["stages"]
    checkpoint = stages["sft"]["checkpoint"]
    assert stages["sft"]["steps"] == 3 and (Path(checkpoint) / "model.safetensors").is_file()
    # The student answered every prompt, first from its base weights, then from the checkpoint.
    seeds = sorted(r["id"] for r in read_rows(out, "seeds"))
    base, trained = read_rows(out, "base_eval"), read_rows(out, "eval")
    assert sorted(r["id"] for r in trained) == sorted(r["id"] for r in base) == seeds and len(seeds) == 16
    assert not read_rows(out, "eval", failed=True) and all(r["student_answer"] for r in trained)
    assert [r["student_answer"] for r in base] != [r["student_answer"] for r in trained]
    assert stages["base_eval"]["eval"]["student_weights"] == "tiny:student"
    assert stages["eval"]["eval"]["student_weights"] == checkpoint
    assert stages["eval"]["eval"]["exact_match_n"] == sum(1 for r in trained if r["gold"] is not None) > 0
    # The sft stage moved the server onto the checkpoint (a new server, or the same one told to load it), and synthkd
    # stopped every server when the run ended.
    logs = sorted((out / "logs").glob("server-student-*.log"))
    started = [log.read_text().split(" (", 1)[1].split(")", 1)[0] for log in logs]  # "hfserver: NAME (DIR) on URL"
    if reload_weights:
        assert len(started) == 1 and "/tiny/student-" in started[0], started
        assert logs[0].read_text().splitlines()[1:] == [f"hfserver: weights from {checkpoint}"]
        assert "student now answers from" in proc.stderr and "loaded into its running server" in " ".join(proc.stderr.split())
    else:
        assert len(started) == 2 and checkpoint in started and any("/tiny/student-" in path for path in started), started
    assert [pid for log in logs for pid in _servers_on(int(log.stem.rsplit("-", 1)[1]))] == []


@pytest.mark.needs_torch
def test_hfserver_replies_as_an_openai_server(synthkd_home: Path) -> None:
    """What synthkd relies on from a server: greedy is repeatable, a seed fixes a sample, caps and usage are honest."""
    from synthkd.serve.tiny import tiny_model_dir
    from tests.hfserver import Model

    model = Model(str(tiny_model_dir(synthkd_home, REPO, "student")), "student")
    ask = {"model": "student", "messages": [{"role": "user", "content": "Name a colour."}]}
    greedy = model.complete({**ask, "max_tokens": 6})
    assert greedy["choices"][0]["message"]["content"] == model.complete({**ask, "max_tokens": 6})["choices"][0]["message"]["content"]
    sampled = [model.complete({**ask, "max_completion_tokens": 8, "temperature": 1.0, "seed": s}) for s in (1, 1, 2)]
    texts = [r["choices"][0]["message"]["content"] for r in sampled]
    assert texts[0] == texts[1] != texts[2]
    two = model.complete({**ask, "max_tokens": 8, "temperature": 1.0, "seed": 1, "n": 2})
    assert [c["message"]["content"] for c in two["choices"]] == [texts[0], texts[2]]  # choice i samples with seed + i
    usage, choice = sampled[0]["usage"], sampled[0]["choices"][0]
    prompt = model.tokenizer.apply_chat_template(ask["messages"], tokenize=False, add_generation_prompt=True)
    assert usage["prompt_tokens"] == len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert usage["completion_tokens"] <= 8 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 8 else "stop")
    with pytest.raises(ValueError):
        model.complete({"model": "student", "messages": []})
