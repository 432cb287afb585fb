"""Start, health-check, share, restart and stop vLLM OpenAI-compatible servers.

Endpoints whose `serve` blocks are the same share one server (every served name is registered
with --served-model-name). A server follows its parent: it is started with PR_SET_PDEATHSIG so a
`kill -9` of synthkd does not leave it orphaned, and stop_all() runs at exit, on Ctrl-C and on errors.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from synthkd.config.endpoints import EndpointConfig, ServeConfig
from synthkd.errors import ServeError
from synthkd.models import resolve_model
from synthkd.serve.process import LaunchSpec, LocalLauncher, Server, wait_healthy
from synthkd.serve.reload import reload_blocker, reload_in_place
from synthkd.settings import Settings


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

        If the endpoint's servers run other weights, the new ones are loaded into them where they fit
        (`_reload`), else they are stopped and new ones started (all replicas: a student moved onto a new
        checkpoint moves every replica). `names` are all the served names the servers answer to.
        """
        assert config.serve is not None
        path = self.resolve_model_path(model_path or config.serve.model_path)
        key = _serve_key(config.serve, path)
        current = self._endpoint_server.get(endpoint)
        group = self.servers.get(key)
        # Several replicas: one that died is restarted by its endpoint client (runtime._restart_replica).
        if current == key and group and (len(group) > 1 or not group[0].death()):
            return group
        if current and current != key and group is None:
            moved = self._reload(endpoint, current, key, config.serve, path, names, reporter)
            if moved is not None:
                self._endpoint_server[endpoint] = key
                return moved
        if current and current != key and not self._shared(current, endpoint):
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

    def _reload(self, endpoint: str, current: str, key: str, serve: ServeConfig, path: str, names: list[str],
                reporter: Any) -> list[Server] | None:
        """Move the endpoint's running servers onto the weights at `path` in place (serve/reload.py).

        None where that cannot or should not be done (another endpoint shares the servers, a replica died, the new
        weights differ in architecture or tokenizer, Ray replicas, a server that refused): the caller restarts.
        """
        group = self.servers.get(current)
        if not group or not self._reloadable(serve) or self._shared(current, endpoint):
            return None
        if any(s.death() for s in group) or not set(names) <= set(group[0].names):
            return None
        note = reporter.note if reporter is not None else (lambda _text: None)
        own = not serve.command  # a vLLM server synthkd started carries its worker extension (serve/vllm_worker.py)
        blocker = reload_blocker(group[0].model_path, path, reprepares=own)
        if blocker is not None:
            note(f"restarting the server of {endpoint} for {path}: {blocker}")
            return None
        started = time.monotonic()
        try:
            for server in group:
                reload_in_place(f"http://{server.host}:{server.port}", path, serve.startup_timeout_s,
                                method="synthkd_reload_weights" if own else "reload_weights")
        except ServeError as exc:
            note(f"restarting the server of {endpoint}: loading {path} in place failed ({exc.what})")
            return None
        for server in group:
            server.move_to(key, path)
        self._specs[key] = [replace(spec, key=key, path=path) for spec in self._specs.pop(current)]
        self.servers[key] = self.servers.pop(current)
        note(f"{endpoint} now answers from {path} (weights loaded into its running server in {time.monotonic() - started:.1f}s)")
        return self.servers[key]

    def _shared(self, key: str, endpoint: str) -> bool:
        """Whether another endpoint than `endpoint` is answered by the servers under `key`."""
        return any(k != endpoint and v == key for k, v in self._endpoint_server.items())

    def _reloadable(self, serve: ServeConfig) -> bool:
        """Whether this endpoint's servers take new weights in place (ServeConfig.reload_weights)."""
        if serve.reload_weights is False or self._use_ray():
            return False
        return serve.reload_weights is True or not serve.command

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


def _serve_key(serve: ServeConfig, path: str) -> str:
    blob = json.dumps({**serve.model_dump(exclude={"model_path", "startup_timeout_s"}), "path": path}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
