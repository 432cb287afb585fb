"""Services a running stage uses: endpoint clients (and their servers), prompts, outputs, run.json.

Stages receive a Runtime and never import the CLI or the runner.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from synthkd.client.accounting import Budget, Meter
from synthkd.client.cache import RequestCache
from synthkd.client.endpoint import Call, EndpointClient, Result
from synthkd.client.executor import run_calls
from synthkd.config.endpoints import BatchConfig
from synthkd.config.loader import LoadedPipeline
from synthkd.errors import ConfigError
from synthkd.outputs import CardInfo, write_output
from synthkd.progress import Reporter
from synthkd.prompts import PromptLibrary
from synthkd.redact import register_secret, scrub, scrub_strings
from synthkd.models.store import weights_fingerprint as fingerprint
from synthkd.serve.process import wait_healthy
from synthkd.serve.vllm_server import ServerManager
from synthkd.records import FailedRow, Iteration, Record, plain_rows
from synthkd.settings import Settings


class RunState:
    """RUN_DIR/run.json, rewritten atomically after every change."""

    def __init__(self, path: Path, pipeline: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {"pipeline": pipeline, "status": "running", "stages": {}}
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError):
                old = None
            # A run.json that is not what synthkd writes (cut short by a full disk, edited by hand) is started
            # afresh: stages are still skipped by their outputs' own done-markers, never by run.json.
            if isinstance(old, dict):
                self.data["stages"] = old.get("stages") if isinstance(old.get("stages"), dict) else {}
                self.data["invocations"] = old.get("invocations") if isinstance(old.get("invocations"), int) else 0
        self.data["invocations"] = int(self.data.get("invocations", 0)) + 1
        self.data["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {})

    def save_iteration(self, stage: str, iteration: Iteration) -> None:
        """Record one iteration's stats (keyed by its number, replacing an earlier record) and save.

        Iterative stages (Lion, DPO, Montessori) call this at the end of each iteration, so run.json
        shows finished iterations while a run goes on, and a resumed run overwrites rather than repeats.
        """
        stats = iteration.model_dump(exclude_none=True)
        entry = self.stage(stage)
        kept = [s for s in entry.get("iterations", []) if s.get("iteration") != stats["iteration"]]
        entry["iterations"] = sorted(kept + [stats], key=lambda s: s["iteration"])
        self.save()

    def save(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(scrub_strings(self.data), indent=2, sort_keys=False))  # no URL credentials, no keys
        os.replace(tmp, self.path)


class Runtime:
    """Everything shared by the stages of one run."""

    def __init__(self, pipeline: LoadedPipeline, run_dir: Path, settings: Settings, reporter: Reporter) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config
        self.run_dir = run_dir
        self.settings = settings
        self.reporter = reporter
        run_dir.mkdir(parents=True, exist_ok=True)
        self.cache = RequestCache(run_dir / "cache.sqlite")
        self.budget = Budget(self.config.budget_usd, self.cache.total_cost())
        self.prompts = PromptLibrary(pipeline.prompts_dir)
        self.servers = ServerManager(settings, run_dir / "logs", pipeline.prompts_dir.parent, ray=self.config.ray)
        self.state = RunState(run_dir / "run.json", self.config.name)
        self._clients: dict[str, EndpointClient] = {}
        self._overrides: dict[str, str] = {}  # endpoint -> weights it must serve now
        self._restarting: dict[str, set[int]] = {}  # endpoint -> replicas being restarted
        self._tasks: set[asyncio.Task[None]] = set()
        self.stage_batch: bool | None = None  # a stage's `batch:`, fixed in the view `for_stage` makes

    def for_stage(self, batch: bool | None) -> "Runtime":
        """A view of this runtime for one stage, its calls sent as the stage's `batch:` says. It shares everything
        else (cache, budget, clients, servers, run.json), so a stage sees what the stages before it did."""
        view = copy.copy(self)
        view.stage_batch = batch
        return view

    # ---- endpoints ----------------------------------------------------------------
    def api_key(self, endpoint: str) -> str | None:
        cfg = self.config.endpoints[endpoint]
        if cfg.api_key_env is None:
            return None
        key = self.settings.get(cfg.api_key_env)
        if not key:
            raise ConfigError(
                f"environment variable {cfg.api_key_env} (the API key of endpoint {endpoint!r}) is not set",
                where=f"endpoints.{endpoint}.api_key_env",
                fix=f"export {cfg.api_key_env}=... before running",
            )
        register_secret(key, f"${{env:{cfg.api_key_env}}}")  # scrubbed from every message and file from now on
        return key

    def serve_weights(self, endpoint: str, model_path: str) -> None:
        """From now on, serve `endpoint` from these weights (a new checkpoint); restarts lazily."""
        self._overrides[endpoint] = model_path

    def served_names(self, endpoint: str) -> list[str]:
        """Served names for the server behind `endpoint`: every endpoint with the same serve block."""
        cfg = self.config.endpoints[endpoint]
        names = [cfg.model]
        if endpoint in self._overrides:
            return names
        for other, oc in self.config.endpoints.items():
            if other != endpoint and oc.served and oc.serve == cfg.serve and other not in self._overrides and oc.model not in names:
                names.append(oc.model)
        return names

    async def client(self, endpoint: str) -> EndpointClient:
        """A client for `endpoint`, starting or restarting its server first when synthkd serves it."""
        if endpoint not in self.config.endpoints:
            raise ConfigError(f"unknown endpoint {endpoint!r}", fix=f"use one of {', '.join(self.config.endpoints)}")
        cfg = self.config.endpoints[endpoint]
        if not cfg.served:
            if endpoint not in self._clients:
                self._clients[endpoint] = EndpointClient(
                    endpoint, cfg, base_url=cfg.base_urls, api_key=self.api_key(endpoint),
                    cache=self.cache, budget=self.budget, model_identity=cfg.identity, note=self.reporter.note,
                    # Before the URL was part of the key, a remote endpoint's replies were cached under its model
                    # alone: they are still found (for this endpoint's own replies only), so upgrading pays nothing.
                    legacy_identity=cfg.model,
                )
            return self._clients[endpoint]
        servers = self.servers.ensure(endpoint, cfg, self.served_names(endpoint), self._overrides.get(endpoint), self.reporter)
        identity = f"{cfg.model}@{fingerprint(servers[0].model_path)}"
        current = self._clients.get(endpoint)
        stale = current is None or getattr(current, "server_key", None) != servers[0].key or current.model_identity != identity
        if stale or (len(servers) == 1 and current.urls != [servers[0].base_url]):  # type: ignore[union-attr]
            if current is not None:
                await current.aclose()
            client = EndpointClient(
                endpoint, cfg, base_url=[s.base_url for s in servers], api_key=None, cache=self.cache, budget=self.budget,
                model_identity=identity, alive=[s.death for s in servers], note=self.reporter.note,
                # With several replicas, one that dies is taken out and started again; with one, the run stops.
                on_replica_death=(lambda i, why, ep=endpoint: self._restart_replica(ep, i, why)) if len(servers) > 1 else None,
            )
            client.server_key = servers[0].key  # type: ignore[attr-defined]
            self._clients[endpoint] = client
        return self._clients[endpoint]

    def _restart_replica(self, endpoint: str, index: int, why: str) -> None:
        """A served replica died: start it again in the background and put it back in rotation."""
        client = self._clients.get(endpoint)
        if client is None or index in self._restarting.setdefault(endpoint, set()):
            return
        self._restarting[endpoint].add(index)
        key = client.server_key  # type: ignore[attr-defined]
        self.reporter.note(f"[{endpoint}] replica {index} died; restarting it ({why.splitlines()[0]})")

        async def restart() -> None:
            try:
                server = self.servers.respawn(key, index)  # here, in the loop's thread (see ServerManager.respawn)
                spec_timeout = client.config.serve.startup_timeout_s if client.config.serve else 600
                await asyncio.to_thread(wait_healthy, server, spec_timeout)
                if self._clients.get(endpoint) is client:
                    client.pool.reconnect(client.config, None, index, server.base_url, server.death)
            except Exception as exc:  # noqa: BLE001 - the other replicas carry on; the next death check reports it
                self.reporter.note(f"[{endpoint}] replica {index} could not be restarted: {exc}")
            finally:
                self._restarting[endpoint].discard(index)

        self._tasks.add(task := asyncio.get_running_loop().create_task(restart()))
        task.add_done_callback(self._tasks.discard)

    async def call_all(self, endpoint: str, label: str, calls: list[Call], meter: Meter) -> list[Result]:
        """Results of `calls` on `endpoint`, in order, with a progress bar; counts go into `meter`."""
        client = await self.client(endpoint)
        step = Meter()
        with self.reporter.step(label, len(calls), step) as progress:
            results = await run_calls(client, calls, step, progress, batch=self.batch_for(endpoint))
        meter.merge(step)
        return results

    def batch_for(self, endpoint: str) -> BatchConfig | None:
        """How the running stage's calls to `endpoint` use its batch API (None: online).

        The stage's `batch:` decides where it is set, else the endpoint's `batch.enabled`; endpoints synthkd
        serves itself always answer online.
        """
        cfg = self.config.endpoints[endpoint]
        if cfg.served or self.stage_batch is False:
            return None
        if self.stage_batch is True:
            return cfg.batch or BatchConfig()
        return cfg.batch if cfg.batch is not None and cfg.batch.enabled else None

    def current_weights(self, endpoint: str) -> str | None:
        """The weights a served endpoint answers from now (a checkpoint, or its serve.model_path)."""
        cfg = self.config.endpoints[endpoint]
        return self._overrides.get(endpoint) or (cfg.serve.model_path if cfg.serve else None)

    def endpoint_identity(self, endpoint: str) -> str:
        """What a stage's fingerprint records about an endpoint without starting it."""
        cfg = self.config.endpoints[endpoint]
        if cfg.served:
            path = self._overrides.get(endpoint) or cfg.serve.model_path  # type: ignore[union-attr]
            return f"{cfg.model}@{path}"
        return cfg.identity

    # ---- outputs ----------------------------------------------------------------------
    def write_dataset(self, name: str, rows: Sequence[Record | Mapping[str, Any]], failed: Sequence[FailedRow], *, row_type: type[Record] | None,
                      fingerprint: str, columns: set[str] | None = None, templates: dict[str, str] | None = None,
                      models: dict[str, str] | None = None, counts: dict[str, int] | None = None, fmt: str = "records",
                      description: str = "") -> Path:
        """Write RUN_DIR/datasets/<name>/. Rows are checked against `row_type` (None: a stage passing its
        input's columns through, which then names them in `columns` so an empty dataset keeps them)."""
        rows = plain_rows(rows)
        if row_type is not None:
            row_type.check_rows(rows, name)
            columns = row_type.columns()
        # An error's text may quote a URL or a key; the rows' own columns (and raw replies) are data, kept as they are.
        lost = [{**r, **{k: scrub(r[k]) for k in ("reason", "detail") if isinstance(r.get(k), str)}} for r in (f.to_json() for f in failed)]
        card = CardInfo(
            pipeline_name=self.config.name, pipeline_yaml=self.pipeline.yaml_text, stage=name, description=description,
            models=models or {}, templates=templates or {}, counts=dict(counts or {}), fmt=fmt,
        )
        return write_output(self.run_dir, name, rows, lost, card, fingerprint, columns=sorted(columns or ()))

    async def aclose(self) -> int:
        """Stop background tasks, clients and servers, then close the cache; each step runs even if one before it
        fails (the first failure is raised at the end). Returns the paid replies the cache could not write."""
        errors: list[BaseException] = []
        for task in list(self._tasks):
            task.cancel()
        for client in self._clients.values():
            try:
                await client.aclose()
            except Exception as exc:
                errors.append(exc)
        self._clients.clear()
        try:
            self.servers.stop_all()
        except Exception as exc:
            errors.append(exc)
        unsaved = self.cache.close()
        if errors:
            raise errors[0]
        return unsaved
