"""Served replicas placed by Ray actors on a local Ray cluster (a few CPUs, loopback only): two
replicas of the test server behind one endpoint; one killed mid-stage is restarted and nothing is
lost or repeated; `kill -9` of synthkd leaves no server behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, check_run_outputs, read_rows, run_cli, run_json, seeds_file

# A real Ray cluster: CI runs it, `make test-fast` skips it. `serial`: `make test` runs these in a pass of
# their own, outside pytest-xdist (under an xdist worker the cluster became unreachable mid-module, or a
# run on it hung, while the same tests pass on their own; not yet understood).
pytestmark = [pytest.mark.needs_ray, pytest.mark.slow, pytest.mark.serial]

# A Ray cluster that lives on loopback only: no address of this machine but 127.0.0.1 is used.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_DISABLE_USAGE_STATS": "1"}
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray cluster for these tests, on loopback."""
    port = _free_port()
    env = {**os.environ, **RAY_ENV}
    start = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=4",
             "--include-dashboard=false", "--disable-usage-stats"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _pipeline(tmp: Path, marker: str, n: int = 120, latency_ms: int = 40) -> Path:
    command = [sys.executable, "-m", "tests.fakeserver", "--host", "{host}", "--port", "{port}", "--latency-ms", str(latency_ms),
               "--log-sync", "--log", str(tmp / f"{marker}-{{port}}.jsonl")]
    data = {
        "name": "replicated", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": {"base_url": None, "model": "teacher", "concurrency": 16, "timeout_s": 3, "max_retries": 8,
                                  "serve": {"model_path": "echo-model", "command": command, "replicas": 2, "startup_timeout_s": 120}}},
        "stages": [
            {"name": "seeds", "type": "load", "path": str(seeds_file(tmp, n))},
            {"name": "answers", "type": "generate", "input": "seeds", "endpoint": "teacher", "template": "lion/answer.jinja2",
             "sampling": {"max_tokens": 32, "seed": 7}},
        ],
    }
    path = tmp / "replicated.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _servers(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"tests.fakeserver.*{marker}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _replica_calls(out: Path) -> dict[str, int]:
    ep = run_json(out)["stages"]["answers"]["by_endpoint"]["teacher"]
    return {k.split(" ", 1)[1]: int(v) for k, v in ep.items() if k.startswith("replica_calls ")}


def run_and_kill_one_replica(path: Path, out: Path, marker: str, logs: Path, env: dict[str, str]) -> str:
    """Run the pipeline; once both replicas have answered some calls, kill one server (kill -9). Returns stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "synthkd.cli", "run", str(path), "--out", str(out)], cwd=REPO,
                            env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        found = sorted(logs.glob(f"{marker}-*.jsonl"))
        if len(found) == 2 and all(len(p.read_text().splitlines()) >= 10 for p in found):
            break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    victims = _servers(marker)
    assert len(victims) == 2, victims
    os.kill(victims[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    return stderr


def test_two_replicas_on_ray_and_one_killed_mid_stage(tmp_path: Path, ray_cluster: str) -> None:
    marker = f"rayrep{os.getpid()}a"
    env = {**RAY_ENV, "RAY_ADDRESS": ray_cluster}
    path, out = _pipeline(tmp_path, marker), tmp_path / "run"
    stderr = run_and_kill_one_replica(path, out, marker, tmp_path, env)
    assert "on the Ray cluster" in stderr and "restarting it" in stderr
    rows = read_rows(out, "answers")
    assert len(rows) == 120 and len({r["id"] for r in rows}) == 120 and not read_rows(out, "answers", failed=True)
    calls = _replica_calls(out)
    assert len(calls) >= 2 and all(v > 0 for v in calls.values())
    assert sum(calls.values()) == run_json(out)["stages"]["answers"]["calls"] == 120  # each record answered once
    check_run_outputs(out)
    assert not _servers(marker), "servers left running after the run"


def test_kill_9_of_synthkd_leaves_no_server_on_ray(tmp_path: Path, ray_cluster: str) -> None:
    marker = f"rayrep{os.getpid()}b"
    env = {**os.environ, **RAY_ENV, "RAY_ADDRESS": ray_cluster}
    path = _pipeline(tmp_path, marker, n=300)
    proc = subprocess.Popen([sys.executable, "-m", "synthkd.cli", "run", str(path), "--out", str(tmp_path / "run")], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(_servers(marker)) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None
        time.sleep(0.1)
    assert len(_servers(marker)) == 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 90
    while _servers(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _servers(marker), "a replica outlived synthkd"


@pytest.mark.needs_vllm
@pytest.mark.needs_torch
def test_two_vllm_replicas_on_ray_give_the_single_server_dataset(tmp_path: Path, ray_cluster: str, synthkd_home: Path) -> None:
    """A tiny model served by two vLLM replicas, each started by a Ray actor: the same dataset as one server."""
    def pipeline(replicas: int) -> Path:
        data = {
            "name": f"vllm{replicas}", "prompts_dir": str(REPO / "prompts"),
            "endpoints": {"teacher": {"base_url": None, "model": "teacher", "concurrency": 32,
                                      "serve": {"model_path": "tiny:teacher", "max_model_len": 512, "replicas": replicas}}},
            "stages": [{"name": "seeds", "type": "load", "path": str(seeds_file(tmp_path, 40))},
                       {"name": "answers", "type": "generate", "input": "seeds", "endpoint": "teacher", "template": "lion/answer.jinja2",
                        "sampling": {"temperature": 0.0, "max_tokens": 24}}],
        }
        path = tmp_path / f"vllm{replicas}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    env = {**RAY_ENV, "SYNTHKD_HOME": str(synthkd_home)}
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli("run", str(pipeline(1)), "--out", str(one), env=env, timeout=600).returncode == 0
    proc = run_cli("run", str(pipeline(2)), "--out", str(two), env={**env, "RAY_ADDRESS": ray_cluster}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(2 replicas) on the Ray cluster" in proc.stderr
    calls = _replica_calls(two)
    assert len(calls) == 2 and all(v > 0 for v in calls.values()) and sum(calls.values()) == 40
    assert [r["response"] for r in read_rows(two, "answers")] == [r["response"] for r in read_rows(one, "answers")]
    check_run_outputs(two)
