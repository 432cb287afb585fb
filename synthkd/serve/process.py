"""A server process, wherever it runs: how one replica is described, started here, watched and stopped.

Shared by the launchers (this machine's `LocalLauncher`, Ray's in `ray_replicas`), the server manager
(`vllm_server`) and the training launcher (`train/launch.py`), so none of them borrows from another.
A process started here follows its parent: PR_SET_PDEATHSIG sends it SIGTERM when synthkd dies.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from synthkd.config.endpoints import ServeConfig
from synthkd.errors import ServeError
from synthkd.models.store import weights_fingerprint as fingerprint


@dataclass
class Server:
    """One running server process (a replica), started here or by a Ray actor (`ray_replicas.RayServer`)."""

    key: str
    model_path: str
    names: list[str]
    port: int
    process: subprocess.Popen[bytes] | None
    log_path: Path
    identity: str
    host: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def death(self) -> str | None:
        """None while the server runs; else its exit code and the end of its log."""
        if self.process is None or self.process.poll() is None:
            return None
        return f"the server exited with code {self.process.returncode}; log {self.log_path}:\n{log_tail(self.log_path)}"

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)

    def move_to(self, key: str, path: str) -> None:
        """The same process now answers from the weights at `path` (loaded in place): its identity follows them."""
        self.key, self.model_path, self.identity = key, path, weights_identity(self.names, path)


def weights_identity(names: list[str], path: str) -> str:
    """What a locally started server answers from: its first served name and its weights' fingerprint."""
    return f"{names[0]}@{fingerprint(path)}"


@dataclass
class LaunchSpec:
    """Everything needed to start one replica, wherever it runs."""

    key: str
    serve: ServeConfig
    path: str
    names: list[str]
    index: int
    env: dict[str, str]
    cwd: str


# The worker extension a vLLM server synthkd starts loads checkpoints with (serve/vllm_worker.py).
RELOAD_EXTENSION = "synthkd.serve.vllm_worker.ReloadInPlace"

# `serve.command`'s placeholders. Only these are replaced, so other braces (a JSON argument such as
# --override '{"a": 1}') pass through as written; str.format would have choked on them.
COMMAND_PLACEHOLDERS = ("host", "port", "model", "name")
_PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")  # not inside {{...}}


def check_command(command: list[str], where: str) -> None:
    """`serve.command` at validate time: its program exists, and every {placeholder} is one synthkd fills."""
    from synthkd.errors import ConfigError

    unknown = sorted({m.group(1) for arg in command for m in _PLACEHOLDER.finditer(arg)} - set(COMMAND_PLACEHOLDERS))
    if unknown:
        raise ConfigError(f"serve.command has unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}", where=where,
                          fix=f"use {', '.join('{' + p + '}' for p in COMMAND_PLACEHOLDERS)}")
    program = command[0]
    if shutil.which(program) is None:
        raise ConfigError(f"serve.command's program {program!r} is not found or not executable", where=where,
                          fix="install it, put it on PATH, or give its absolute path")


def server_command(serve: ServeConfig, path: str, names: list[str], host: str, port: int, env: dict[str, str]) -> list[str]:
    """The command line of one replica (vLLM's OpenAI server, or `serve.command`); sets engine variables in `env`."""
    if serve.command:
        fill = {"host": host, "port": str(port), "model": path, "name": names[0]}
        return [_PLACEHOLDER.sub(lambda m: fill.get(m.group(1), m.group(0)), arg) for arg in serve.command]
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", path, "--served-model-name", *names,
        "--host", host, "--port", str(port),
        "--max-model-len", str(serve.max_model_len), "--seed", "0",
        "--generation-config", "vllm",
    ]
    if serve.tensor_parallel_size > 1:
        cmd += ["--tensor-parallel-size", str(serve.tensor_parallel_size)]
    if device_of(serve.device) == "cpu":
        # --no-enable-chunked-prefill: the CPU engine dies ("CPU Generator does not use offset") when a
        # request with its own seed has its prompt split across steps, which many long prompts in
        # flight cause; whole-prompt prefill avoids it (tests/test_e2e_vllm.py::test_seeded_long_prompts).
        cmd += ["--enforce-eager", "--dtype", "float32", "--no-enable-chunked-prefill"]
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(serve.cpu_kvcache_gib))
        if serve.tensor_parallel_size == 1 and "--distributed-executor-backend" not in serve.extra_args:
            # One worker: run it inside the engine process instead of a third spawned process, which
            # imports torch and vLLM again. Measured here (2 cores): start 24.0 -> 17.5 s for
            # SmolLM2-135M and 22.0 -> 15.5 s for a tiny model, the same generation throughput
            # (234 vs 231 tokens/s). vLLM-CPU allows the in-process worker only with
            # VLLM_ENABLE_V1_MULTIPROCESSING=0; the engine core still runs in its own process.
            cmd += ["--distributed-executor-backend", "uni"]
            env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # vLLM-CPU binds its engine to all cores but one, which it keeps for the API server: on a
        # 2-core machine that is half the machine. Binding all cores measured 1.7x the generation
        # throughput here (SmolLM2-135M, 128 requests in flight: 271 vs 158 tokens/s). Override
        # with the same variables in the environment.
        cores = sorted(os.sched_getaffinity(0))
        if cores == list(range(cores[0], cores[-1] + 1)):  # a contiguous range is what the variable takes
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"{cores[0]}-{cores[-1]}")
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    else:
        cmd += ["--gpu-memory-utilization", str(serve.gpu_memory_utilization)]
    if serve.reload_weights is not False and host == "127.0.0.1":
        # vLLM's development endpoints (/collective_rpc, /reset_prefix_cache) and synthkd's worker extension let
        # synthkd load a new checkpoint into this server instead of restarting it (serve/reload.py); the endpoints
        # are opened on loopback only.
        env.setdefault("VLLM_SERVER_DEV_MODE", "1")
        if "--worker-extension-cls" not in serve.extra_args:  # the user's own wins (a reload then restarts)
            cmd += ["--worker-extension-cls", RELOAD_EXTENSION]
    if serve.compact_json:
        cmd += ["--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
    return cmd + serve.extra_args


class LocalLauncher:
    """Starts replicas as child processes of synthkd on this machine."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def spawn(self, spec: LaunchSpec) -> Server:
        """Start the replica's process (not yet ready: see `wait_healthy`)."""
        port = spec.serve.port + spec.index if spec.serve.port else free_port()
        env = dict(spec.env)
        cmd = server_command(spec.serve, spec.path, spec.names, "127.0.0.1", port, env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"server-{spec.names[0]}-{port}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=spec.cwd,
                                   start_new_session=True, preexec_fn=die_with_parent)
        return Server(spec.key, spec.path, spec.names, port, process, log_path, identity=weights_identity(spec.names, spec.path))

    def close(self) -> None:
        pass


def device_of(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        importlib.metadata.distribution("vllm-cpu")
        return "cpu"
    except importlib.metadata.PackageNotFoundError:
        return "cuda" if shutil.which("nvidia-smi") else "cpu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """In the child: get SIGTERM when synthkd dies, however it dies (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def wait_healthy(server: Server, timeout: float) -> None:
    """Wait for GET /health to answer 200; raise ServeError with the log if the server dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        died = server.death()
        if died:
            raise ServeError(f"{died}\n(while starting {server.model_path})", fix=f"read the full log at {server.log_path}")
        try:
            with urllib.request.urlopen(f"http://{server.host}:{server.port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    raise ServeError(f"the server did not become healthy within {timeout:.0f}s", fix=f"see {server.log_path}; raise serve.startup_timeout_s")


def terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
