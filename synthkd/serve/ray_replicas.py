"""Replicas on a Ray cluster: each is a server process started by a Ray actor on a cluster node.

The actor holds the resources the replica needs (its CPUs, and `tensor_parallel_size` GPUs on a GPU
node), starts the same command a local replica runs (vLLM's OpenAI server, or `serve.command`) on a
free port of its node, and answers for it: where it listens, whether it still runs, the end of its
log. The driver (synthkd) keeps the request cache, the budget and the accounting, and talks to the
replica over HTTP like to any server. Replicas spread over nodes (SPREAD scheduling).

Clean stop: `stop_all()` on exit, Ctrl-C and errors stops each server and kills its actor. If
synthkd itself is killed (`kill -9`), Ray ends the actors of its job with the driver, and each
server was started with PR_SET_PDEATHSIG, so it follows its actor.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from synthkd.errors import ConfigError, ServeError
from synthkd.serve.process import LaunchSpec, Server, device_of, die_with_parent, terminate, server_command
from synthkd.settings import Settings

HEALTH_CACHE_S = 1.0  # how long a "still running" answer from an actor is trusted (pick() asks per request)


class _ServerActorImpl:
    """Runs on a cluster node (as a Ray actor): one server process and its log."""

    def __init__(self, cmd_spec: LaunchSpec, log_dir: str) -> None:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        # The address the cluster knows this node by (what the driver can reach).
        self.host = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), ray.util.get_node_ip_address())
        self.port = cmd_spec.serve.port + cmd_spec.index if cmd_spec.serve.port else _free_port_on(self.host)
        env = dict(cmd_spec.env)
        cmd = server_command(cmd_spec.serve, cmd_spec.path, cmd_spec.names, self.host, self.port, env)
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log_dir) / f"server-{cmd_spec.names[0]}-{self.host}-{self.port}.log"
        cwd = cmd_spec.cwd if os.path.isdir(cmd_spec.cwd) else None
        self.process = subprocess.Popen(cmd, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                        start_new_session=True, preexec_fn=die_with_parent)

    def address(self) -> tuple[str, int, int]:
        return self.host, self.port, self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        terminate(self.process)


def _free_port_on(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RayServer(Server):
    """A replica run by a Ray actor; `death()` asks the actor (at most once a second)."""

    actor: Any = None
    _checked: float = 0.0
    _death: str | None = None

    def death(self) -> str | None:
        if self._death is not None or time.monotonic() - self._checked < HEALTH_CACHE_S:
            return self._death
        import ray

        self._checked = time.monotonic()
        try:
            code = ray.get(self.actor.poll.remote(), timeout=10)
            if code is not None:
                self._death = f"the server on {self.host} exited with code {code}; its log ends:\n{self._tail()}"
        except Exception as exc:  # noqa: BLE001 - an actor or node that is gone is a dead replica
            self._death = f"the Ray actor of the server on {self.host} is gone: {type(exc).__name__}: {exc}"
        return self._death

    def _tail(self) -> str:
        import ray

        try:
            text = ray.get(self.actor.log_tail.remote(), timeout=10)
        except Exception:  # noqa: BLE001
            return "(log unreachable)"
        # The log is also kept on the driver, beside the other server logs.
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text(text + "\n")
        return str(text)

    def stop(self) -> None:
        import ray

        try:
            ray.get(self.actor.stop.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - stopping what is already gone is fine
            pass
        try:
            ray.kill(self.actor)
        except Exception:  # noqa: BLE001
            pass


class RayLauncher:
    """Starts replicas as Ray actors; connects to the cluster on first use."""

    def __init__(self, ray_config: Any, settings: Settings, log_dir: Path) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("replicas on a Ray cluster need the `ray` package", where="ray",
                              fix="pip install 'ray>=2.9' (or install synthkd with the [ray] extra), or remove `ray:` and RAY_ADDRESS") from None
        self.ray = ray
        self.config = ray_config
        self.log_dir = log_dir
        self.num_cpus = float(ray_config.num_cpus_per_replica) if ray_config is not None else 1.0
        address = (ray_config.address if ray_config is not None else None) or settings.get("RAY_ADDRESS") or "auto"
        if address == "auto" and settings.get("RAY_ADDRESS"):
            address = str(settings.get("RAY_ADDRESS"))
        if not ray.is_initialized():
            try:
                # 'local': a cluster of this machine alone, kept on loopback (no other address is used).
                local = {"address": None, "_node_ip_address": "127.0.0.1"} if address == "local" else {"address": address}
                ray.init(**local, include_dashboard=False, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {str(exc).splitlines()[0]}", where="ray.address",
                                  fix="start the cluster (`ray start --head` on the head node) or fix ray.address / RAY_ADDRESS") from None
        self.actor_class = ray.remote(_ServerActorImpl)

    def spawn(self, spec: LaunchSpec) -> Server:
        """Start the replica's actor (which starts the server on its node); not yet ready: see `wait_healthy`."""
        gpus = spec.serve.tensor_parallel_size if _wants_gpu(spec) else 0
        actor = self.actor_class.options(num_cpus=self.num_cpus, num_gpus=gpus, scheduling_strategy="SPREAD").remote(spec, str(self.log_dir))
        try:
            host, port, _pid = self.ray.get(actor.address.remote(), timeout=max(spec.serve.startup_timeout_s, 60))
        except Exception as exc:  # noqa: BLE001
            self.ray.kill(actor)
            raise ServeError(f"no Ray node could start a replica of {spec.names[0]}: {exc}", fix="check `ray status`: free CPUs/GPUs per replica") from None
        log_path = self.log_dir / f"server-{spec.names[0]}-{host}-{port}.log"
        server = RayServer(spec.key, spec.path, spec.names, port, None, log_path, identity=f"{spec.names[0]}@{spec.path}", host=host)
        server.actor = actor
        return server

    def close(self) -> None:
        """Leave the cluster (a cluster this run started itself shuts down with it)."""
        if self.ray.is_initialized():
            self.ray.shutdown()


def _wants_gpu(spec: LaunchSpec) -> bool:
    return spec.serve.command is None and device_of(spec.serve.device) == "cuda"
