"""Start, health-check, share, restart and stop vLLM OpenAI-compatible servers.

Endpoints whose `serve` blocks are the same share one server (every served name is registered
with --served-model-name). A server follows its parent: it is started with PR_SET_PDEATHSIG so a
`kill -9` of synthkd does not leave it orphaned, and stop_all() runs at exit, on Ctrl-C and on errors.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthkd.config.endpoints import EndpointConfig, ServeConfig
from synthkd.errors import ServeError
from synthkd.models import resolve_model
from synthkd.models.store import weights_fingerprint as fingerprint
from synthkd.settings import Settings


@dataclass
class Server:
    """One running vLLM process."""

    key: str
    model_path: str
    names: list[str]
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    identity: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def death(self) -> str | None:
        """None while the server runs; else its exit code and the end of its log."""
        if self.process.poll() is None:
            return None
        return f"vLLM exited with code {self.process.returncode}; log {self.log_path}:\n{_tail(self.log_path)}"


@dataclass
class ServerManager:
    """Owns every server synthkd started in this process."""

    settings: Settings
    log_dir: Path
    corpus_root: Path  # where tiny models take their tokenizer text from (data/, prompts/)
    servers: dict[str, Server] = field(default_factory=dict)
    _endpoint_server: dict[str, str] = field(default_factory=dict)

    def resolve_model_path(self, model_path: str) -> str:
        """Any model string (tiny:NAME, .gguf, packaged name, ?layers=K) -> a local directory (or hub name)."""
        return resolve_model(model_path, self.settings.home, self.corpus_root)

    def ensure(self, endpoint: str, config: EndpointConfig, names: list[str], model_path: str | None = None, reporter: Any = None) -> Server:
        """A running server for `endpoint`, on `model_path` (default: its serve.model_path).

        If the endpoint's server runs other weights, that server is stopped and a new one started.
        `names` are all the served names this server should answer to.
        """
        assert config.serve is not None
        path = self.resolve_model_path(model_path or config.serve.model_path)
        key = _serve_key(config.serve, path)
        current = self._endpoint_server.get(endpoint)
        if current == key and key in self.servers and self.servers[key].process.poll() is None:
            return self.servers[key]
        if current and current != key and not any(k != endpoint and v == current for k, v in self._endpoint_server.items()):
            self.stop(current)
        if key not in self.servers or self.servers[key].process.poll() is not None:
            if reporter is not None:
                reporter.note(f"starting vLLM for {endpoint}: {path}")
            self.servers[key] = self._start(key, config.serve, path, names)
        self._endpoint_server[endpoint] = key
        return self.servers[key]

    def _start(self, key: str, serve: ServeConfig, path: str, names: list[str]) -> Server:
        port = serve.port or _free_port()
        device = _device(serve.device)
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", path, "--served-model-name", *names,
            "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", str(serve.max_model_len), "--seed", "0",
            "--generation-config", "vllm",
        ]
        env = dict(self.settings.env)
        env.pop("VLLM_API_KEY", None)  # local servers need no key; never hand one to a subprocess log
        if device == "cpu":
            # --no-enable-chunked-prefill: the CPU engine dies ("CPU Generator does not use offset") when a
            # request with its own seed has its prompt split across steps, which many long prompts in
            # flight cause; whole-prompt prefill avoids it (tests/test_e2e_vllm.py::test_seeded_long_prompts).
            cmd += ["--enforce-eager", "--dtype", "float32", "--no-enable-chunked-prefill"]
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(serve.cpu_kvcache_gib))
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
        if serve.compact_json:
            cmd += ["--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
        cmd += serve.extra_args
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"vllm-{names[0]}-{port}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=_die_with_parent)
        server = Server(key, path, names, port, process, log_path, identity=f"{names[0]}@{fingerprint(path)}")
        _wait_healthy(server, serve.startup_timeout_s)
        return server

    def stop(self, key: str) -> None:
        server = self.servers.pop(key, None)
        if server is None:
            return
        _terminate(server.process)
        for ep, k in list(self._endpoint_server.items()):
            if k == key:
                del self._endpoint_server[ep]

    def stop_all(self) -> None:
        for key in list(self.servers):
            self.stop(key)


def _serve_key(serve: ServeConfig, path: str) -> str:
    blob = json.dumps({**serve.model_dump(exclude={"model_path", "startup_timeout_s"}), "path": path}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        importlib.metadata.distribution("vllm-cpu")
        return "cpu"
    except importlib.metadata.PackageNotFoundError:
        return "cuda" if shutil.which("nvidia-smi") else "cpu"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM when synthkd dies, however it dies (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServeError(
                f"vLLM exited with code {server.process.returncode} while starting {server.model_path}:\n{_tail(server.log_path)}",
                fix=f"read the full log at {server.log_path}",
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    _terminate(server.process)
    raise ServeError(f"vLLM did not become healthy within {timeout:.0f}s", fix=f"see {server.log_path}; raise serve.startup_timeout_s")


def _terminate(process: subprocess.Popen[bytes]) -> None:
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


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
