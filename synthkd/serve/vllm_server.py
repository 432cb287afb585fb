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
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
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
        return f"the server exited with code {self.process.returncode}; log {self.log_path}:\n{_tail(self.log_path)}"

    def stop(self) -> None:
        if self.process is not None:
            _terminate(self.process)


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


@dataclass
class ServerManager:
    """Owns every server synthkd started in this process: replicas of each served endpoint, here or on Ray."""

    settings: Settings
    log_dir: Path
    corpus_root: Path  # where tiny models take their tokenizer text from (data/, prompts/)
    ray: Any = None  # a RayConfig: replicas go to a Ray cluster (also when RAY_ADDRESS is set)
    servers: dict[str, list[Server]] = field(default_factory=dict)
    _endpoint_server: dict[str, str] = field(default_factory=dict)
    _specs: dict[str, list[LaunchSpec]] = field(default_factory=dict)
    _launcher: Any = None

    def resolve_model_path(self, model_path: str) -> str:
        """Any model string (tiny:NAME, .gguf, packaged name, ?layers=K) -> a local directory (or hub name)."""
        return resolve_model(model_path, self.settings.home, self.corpus_root)

    def ensure(self, endpoint: str, config: EndpointConfig, names: list[str], model_path: str | None = None, reporter: Any = None) -> list[Server]:
        """Running replicas for `endpoint`, on `model_path` (default: its serve.model_path).

        If the endpoint's servers run other weights, they are stopped and new ones started (all
        replicas: a student moved onto a new checkpoint restarts every replica). `names` are all the
        served names the servers answer to.
        """
        assert config.serve is not None
        path = self.resolve_model_path(model_path or config.serve.model_path)
        key = _serve_key(config.serve, path)
        current = self._endpoint_server.get(endpoint)
        group = self.servers.get(key)
        # Several replicas: one that died is restarted by its endpoint client (runtime._restart_replica).
        if current == key and group and (len(group) > 1 or not group[0].death()):
            return group
        if current and current != key and not any(k != endpoint and v == current for k, v in self._endpoint_server.items()):
            self.stop(current)
        if group is None:
            if reporter is not None:
                engine = "vLLM" if not config.serve.command else Path(config.serve.command[0]).name
                n = config.serve.replicas
                where = " on the Ray cluster" if self._use_ray() else ""
                reporter.note(f"starting {engine} for {endpoint}{f' ({n} replicas)' if n > 1 else ''}{where}: {path}")
            self._specs[key] = [self._spec(key, config.serve, path, names, i) for i in range(config.serve.replicas)]
            self.servers[key] = self._start_all(self._specs[key])
        elif len(group) == 1 and group[0].death():  # the one server died (its run stopped): start it again
            self.restart(key, 0)
        self._endpoint_server[endpoint] = key
        return self.servers[key]

    def restart(self, key: str, index: int) -> Server:
        """Stop replica `index` of a group (if it still runs), start it again and wait until it is healthy."""
        server = self.respawn(key, index)
        wait_healthy(server, self._specs[key][index].serve.startup_timeout_s)
        return server

    def respawn(self, key: str, index: int) -> Server:
        """Stop replica `index` and start its process again, without waiting for it to be ready.

        Call it from the main thread: a child started with PR_SET_PDEATHSIG is signalled when the
        *thread* that started it ends, so processes are never started from short-lived threads.
        """
        self.servers[key][index].stop()
        new = self._launch().spawn(self._specs[key][index])
        self.servers[key][index] = new
        return new

    def _use_ray(self) -> bool:
        return self.ray is not None or bool(self.settings.get("RAY_ADDRESS"))

    def _launch(self) -> Any:
        if self._launcher is None:
            if self._use_ray():
                from synthkd.serve.ray_replicas import RayLauncher

                self._launcher = RayLauncher(self.ray, self.settings, self.log_dir)
            else:
                self._launcher = LocalLauncher(self.log_dir)
        return self._launcher

    def _spec(self, key: str, serve: ServeConfig, path: str, names: list[str], index: int) -> LaunchSpec:
        env = dict(self.settings.env)
        env.pop("VLLM_API_KEY", None)  # local servers need no key; never hand one to a subprocess log
        return LaunchSpec(key, serve, path, names, index, env, str(self.corpus_root))

    def _start_all(self, specs: list[LaunchSpec]) -> list[Server]:
        """Start replicas side by side (each takes tens of seconds to load); stop all if one fails.

        The processes are started here, in the calling thread (see `respawn`); only the waiting for
        their health checks runs in threads.
        """
        launcher = self._launch()
        started: list[Server] = []
        try:
            for spec in specs:
                started.append(launcher.spawn(spec))
            if len(started) == 1:
                wait_healthy(started[0], specs[0].serve.startup_timeout_s)
            else:
                with ThreadPoolExecutor(len(started)) as pool:
                    for f in [pool.submit(wait_healthy, srv, spec.serve.startup_timeout_s) for srv, spec in zip(started, specs)]:
                        f.result()
        except BaseException:
            for srv in started:
                srv.stop()
            raise
        return started

    def stop(self, key: str) -> None:
        for server in self.servers.pop(key, []):
            server.stop()
        self._specs.pop(key, None)
        for ep, k in list(self._endpoint_server.items()):
            if k == key:
                del self._endpoint_server[ep]

    def stop_all(self) -> None:
        for key in list(self.servers):
            self.stop(key)
        if self._launcher is not None:
            self._launcher.close()


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
    if _device(serve.device) == "cpu":
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
    if serve.compact_json:
        cmd += ["--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
    return cmd + serve.extra_args


class LocalLauncher:
    """Starts replicas as child processes of synthkd on this machine."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def spawn(self, spec: LaunchSpec) -> Server:
        """Start the replica's process (not yet ready: see `wait_healthy`)."""
        port = spec.serve.port + spec.index if spec.serve.port else _free_port()
        env = dict(spec.env)
        cmd = server_command(spec.serve, spec.path, spec.names, "127.0.0.1", port, env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"server-{spec.names[0]}-{port}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=spec.cwd,
                                   start_new_session=True, preexec_fn=_die_with_parent)
        return Server(spec.key, spec.path, spec.names, port, process, log_path, identity=f"{spec.names[0]}@{fingerprint(spec.path)}")

    def close(self) -> None:
        pass


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
