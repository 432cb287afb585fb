"""A served student moved onto a checkpoint of the same shape loads it into its running server (serve/reload.py).

What a user checks: after the move the server answers from the checkpoint's weights (the same log-probabilities a
transformers pass over those weights gives), without a second server start; a checkpoint that does not fit (other
layers, another tokenizer) or a server that refuses gets a new server, as before.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

from synthkd.config.endpoints import EndpointConfig
from synthkd.serve.reload import reload_blocker
from synthkd.serve.vllm_server import ServerManager
from synthkd.settings import Settings
from tests.conftest import REPO


class Notes:
    """Collects the notes a ServerManager writes (the run's reporter)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(text)


def _model_dir(path: Path, layers: int = 2, embedding: float = 0.0, **tokenizer: str) -> Path:
    """A model directory as far as reload_blocker reads it: config (tied embeddings), tokenizer files, weights."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": layers, "hidden_size": 4, "tie_word_embeddings": True,
                                                  "transformers_version": "5.0.0", "use_cache": True, "_name_or_path": str(path)}))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|end|>", "is_local": True, **tokenizer}))
    (path / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    save_file({"model.embed_tokens.weight": torch.full((8, 4), embedding), "model.norm.weight": torch.rand(4)}, str(path / "model.safetensors"))
    return path


@pytest.mark.needs_torch
def test_what_may_be_loaded_in_place(tmp_path: Path) -> None:
    base = _model_dir(tmp_path / "base")
    same = _model_dir(tmp_path / "ckpt")
    # what a trained checkpoint's files differ in: where and how they were written, not what the model computes
    cfg = json.loads((same / "config.json").read_text())
    (same / "config.json").write_text(json.dumps({**cfg, "use_cache": False, "transformers_version": "5.1.0", "_name_or_path": "x"}))
    (same / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|end|>", "local_files_only": False}))
    assert reload_blocker(str(base), str(same)) is None
    assert "num_hidden_layers" in str(reload_blocker(str(base), str(_model_dir(tmp_path / "deeper", layers=3))))
    assert "tokenizer_config.json" in str(reload_blocker(str(base), str(_model_dir(tmp_path / "tok", eos_token="</s>"))))
    shutil.copytree(same, tmp_path / "template")
    (tmp_path / "template" / "chat_template.jinja").write_text("{{ messages }}")
    assert "chat_template.jinja" in str(reload_blocker(str(base), str(tmp_path / "template")))
    (same / "model.safetensors").unlink()
    assert "safetensors" in str(reload_blocker(str(base), str(same)))
    # trained tied embeddings: a plain vLLM reload would keep the output layer it prepared from the old ones;
    # synthkd's own servers prepare it again
    embedded = str(_model_dir(tmp_path / "embedded", embedding=0.5))
    assert reload_blocker(str(base), embedded) == "its tied embeddings changed"
    assert reload_blocker(str(base), embedded, reprepares=True) is None
    assert reload_blocker(str(base), "HuggingFaceTB/SmolLM2-135M") == "not a local model directory"


def _manager(tmp_path: Path) -> ServerManager:
    return ServerManager(Settings.from_environ({**os.environ, "SYNTHKD_HOME": str(tmp_path / "home")}), tmp_path / "logs", REPO)


def test_a_server_that_refuses_the_weights_is_restarted(tmp_path: Path) -> None:
    """reload_weights: true on a server without vLLM's endpoints (the test server answers 404): a new server starts."""
    base, ckpt = _model_dir(tmp_path / "base"), _model_dir(tmp_path / "ckpt")
    command = [sys.executable, "-m", "tests.fakeserver", "--host", "{host}", "--port", "{port}"]
    cfg = EndpointConfig.model_validate({"model": "student", "serve": {"model_path": str(base), "command": command, "reload_weights": True}})
    manager, notes = _manager(tmp_path), Notes()
    try:
        first = manager.ensure("student", cfg, ["student"], reporter=notes)[0]
        moved = manager.ensure("student", cfg, ["student"], str(ckpt), reporter=notes)[0]
        assert moved.process is not first.process and first.process.poll() is not None  # type: ignore[union-attr]
        assert moved.model_path == str(ckpt)
        assert any("loading" in line and "failed" in line and "404" in line for line in notes.lines), notes.lines
    finally:
        manager.stop_all()


@pytest.mark.slow  # one vLLM start (the move itself takes seconds)
@pytest.mark.needs_vllm
@pytest.mark.needs_torch
def test_vllm_answers_from_the_checkpoint_loaded_in_place(tmp_path: Path, synthkd_home: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synthkd.serve.tiny import tiny_model_dir

    base = tiny_model_dir(synthkd_home, REPO, "student")
    # a "trained" checkpoint: the same network, every weight moved, the tied embeddings too (the output layer
    # vLLM-CPU prepared from them at start is prepared again: serve/vllm_worker.py)
    ckpt = tmp_path / "ckpt"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    assert model.config.tie_word_embeddings
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    model.save_pretrained(ckpt)
    AutoTokenizer.from_pretrained(base).save_pretrained(ckpt)
    cfg = EndpointConfig.model_validate({"model": "student", "serve": {"model_path": str(base), "max_model_len": 512}})
    manager, notes = ServerManager(Settings.from_environ({**os.environ, "SYNTHKD_HOME": str(synthkd_home)}), tmp_path / "logs", REPO), Notes()
    prompt = "Name three colours of the rainbow."
    try:
        server = manager.ensure("student", cfg, ["student"], reporter=notes)[0]
        before = _greedy(server.base_url, prompt)
        process, identity = server.process, server.identity
        moved = manager.ensure("student", cfg, ["student"], str(ckpt), reporter=notes)[0]
        after = _greedy(moved.base_url, prompt)
    finally:
        manager.stop_all()
    assert moved.process is process and moved.model_path == str(ckpt) and moved.identity != identity
    assert any("loaded into its running server" in line for line in notes.lines), notes.lines
    assert len(list((tmp_path / "logs").glob("server-*.log"))) == 1
    # the served log-probabilities are the checkpoint's (a transformers pass over its weights), not the base's
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    start = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for weights, (ids, logprobs) in ((ckpt, after), (base, before)):
        net = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32).eval()
        with torch.no_grad():
            logits = net(torch.tensor([start + ids])).logits[0, len(start) - 1:-1].log_softmax(-1)
        expected = logits[torch.arange(len(ids)), torch.tensor(ids)].tolist()
        assert max(abs(a - b) for a, b in zip(expected, logprobs)) < 1e-3, (weights, expected, logprobs)
    assert before != after


def _greedy(base_url: str, prompt: str) -> tuple[list[int], list[float]]:
    """Greedy token ids and their log-probabilities for a raw prompt (vLLM's completions endpoint)."""
    body = {"model": "student", "prompt": prompt, "max_tokens": 8, "temperature": 0.0, "logprobs": 1,
            "return_tokens_as_token_ids": True, "ignore_eos": True}
    request = urllib.request.Request(f"{base_url}/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        logprobs = json.loads(reply.read())["choices"][0]["logprobs"]
    return [int(t.split(":", 1)[1]) for t in logprobs["tokens"]], [float(x) for x in logprobs["token_logprobs"]]
