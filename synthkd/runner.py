"""Run a pipeline: validate, then stages in order, skipping those whose output is already whole."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from synthkd.client.accounting import Meter
from synthkd.client.refusals import NOT_THE_API_FIX, redirect_error
from synthkd.client.replicas import split_credentials
from synthkd.client.retry import stops_run
from synthkd.config.loader import LoadedPipeline
from synthkd.errors import BudgetExceeded, EndpointError, StorageError, SynthkdError
from synthkd.jsonl import write_jsonl
from synthkd.outputs import is_done, load_output
from synthkd.paths import inside
from synthkd.pipeline import implementation
from synthkd.progress import Reporter
from synthkd.redact import redact_url
from synthkd.runlock import run_lock
from synthkd.records import plain_rows
from synthkd.hashing import digest
from synthkd.runtime import Runtime
from synthkd.settings import Settings
from synthkd.stages.base import RunInputs, StageImpl, StageResult
from synthkd.stages.outlet import (StageOutlet, fingerprint_config, fingerprint_templates, stage_endpoints, stage_models,
                                   stage_templates)
from synthkd.validate import Plan, validate_pipeline


def default_run_dir(loaded: LoadedPipeline) -> Path:
    return Path("runs") / loaded.config.name


def preflight(rt: Runtime, plan: Plan) -> None:
    """Reach every remote endpoint once (GET /models: no tokens spent) before the first paid call.

    An endpoint must answer as an OpenAI-compatible API: a JSON object from /models, or an error status
    (some providers have no /models). A web page, a redirect, a rejected key or a wrong route stops the run.
    """
    for name in sorted(plan.endpoints_used):
        cfg = rt.config.endpoints[name]
        if cfg.served:
            continue
        key = rt.api_key(name)
        reachable = []
        for url in cfg.base_urls:
            try:
                status, body, location = _probe(url, key, min(cfg.timeout_s, 15))
            except (urllib.error.URLError, OSError) as exc:
                last = f"{redact_url(url)}: {getattr(exc, 'reason', exc)}"
                continue
            _check_probe(name, cfg.api_key_env, url, status, body, location)
            reachable.append(url)
        # One replica down is not a reason to stop: the client takes it out. None up is.
        if not reachable:
            raise EndpointError(
                f"endpoint {name!r} is unreachable at {last}", where=f"endpoints.{name}.base_url",
                fix="start the server or fix base_url (--set endpoints.%s.base_url=URL)" % name,
            )


def _check_probe(name: str, key_env: str | None, url: str, status: int, body: bytes, location: str | None) -> None:
    """Raise EndpointError unless GET <url>/models answered as an OpenAI-compatible API would."""
    where, models = f"endpoints.{name}.base_url", f"{redact_url(url.rstrip('/'))}/models"
    if location is not None:
        raise redirect_error(name, status, location)
    if status in (401, 403):
        raise EndpointError(
            f"endpoint {name!r} rejected the API key ({status})", where=f"endpoints.{name}",
            fix=f"check the key in ${key_env}" if key_env else
            f"the endpoint sends no API key: set endpoints.{name}.api_key_env to the environment variable that holds it",
        )
    if stops_run(status) and status != 404:  # 404: a provider without /models; a wrong URL fails at the first call
        raise EndpointError(f"endpoint {name!r}: {models} answered {status}; it does not look like "
                            "an OpenAI-compatible API", where=where, fix=NOT_THE_API_FIX)
    if 200 <= status < 300 and not _json_object(body):
        shown = body[:60].decode("utf-8", "replace").split("\n")[0]
        raise EndpointError(f"endpoint {name!r}: {models} answered with a page that is not JSON "
                            f"({shown!r}...); it does not look like an OpenAI-compatible API", where=where, fix=NOT_THE_API_FIX)


def _json_object(body: bytes) -> bool:
    """Whether a /models body is a JSON object (only its start is checked when it was cut at _PROBE_BYTES)."""
    if len(body) >= _PROBE_BYTES:
        return body.lstrip()[:1] == b"{"
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


_PROBE_BYTES = 1 << 16  # of a /models answer read (a provider's model list can be megabytes)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would send the Authorization header on to any host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _probe(url: str, key: str | None, timeout: float) -> tuple[int, bytes, str | None]:
    """(status, the body's first _PROBE_BYTES, where it redirects or None) of GET <url>/models, no tokens spent.

    Raises what urllib raises when nothing answers (URLError, OSError)."""
    target, basic = split_credentials(f"{url.rstrip('/')}/models")
    request = urllib.request.Request(target)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    elif basic:
        request.add_header("Authorization", basic)
    try:
        with _OPENER.open(request, timeout=timeout) as reply:
            return reply.status, reply.read(_PROBE_BYTES), None
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location") if 300 <= exc.code < 400 else None
        with exc:
            return exc.code, exc.read(_PROBE_BYTES), urllib.parse.urljoin(target, location) if location is not None else None


def _fingerprint(rt: Runtime, impl: StageImpl[Any], upstream: dict[str, str | None]) -> str:
    """What a stage's output depends on: its config, inputs, templates, endpoints' weights, seed, source data."""
    return digest({
        # A moved template counts under its old name (prompts.MOVED): runs made before the move stay done.
        "stage": fingerprint_config(rt, impl).model_dump(), "input": upstream, "templates": fingerprint_templates(rt, impl),
        "source": impl.source_identity(rt.pipeline),
        "endpoints": {e: rt.endpoint_identity(e) for e in stage_endpoints(impl)}, "seed": rt.config.seed,
    })


async def run_pipeline(loaded: LoadedPipeline, run_dir: Path, settings: Settings, reporter: Reporter,
                       weights: dict[str, str] | None = None) -> dict[str, Any]:
    """Run every stage; returns run.json's content. Raises SynthkdError subclasses on failure.

    `weights` serves endpoints from given weights from the start (e.g. `synthkd eval --model`).
    """
    plan = validate_pipeline(loaded, settings)
    with run_lock(run_dir):  # before anything in the run directory is read, written or paid for
        return await _run_locked(loaded, run_dir, settings, reporter, plan, weights)


@asynccontextmanager
async def probe_runtime(loaded: LoadedPipeline, run_dir: Path, settings: Settings, reporter: Reporter) -> AsyncIterator[Runtime]:
    """A runtime for calls made outside any stage (`synthkd efficacy`'s probes): validated, locked, preflighted and
    closed like a run, with its own request cache in `run_dir`."""
    plan = validate_pipeline(loaded, settings)
    with run_lock(run_dir):
        rt = Runtime(loaded, run_dir, settings, reporter)
        try:
            preflight(rt, plan)
            yield rt
        finally:
            await _finish(rt, rt.state)


async def _run_locked(loaded: LoadedPipeline, run_dir: Path, settings: Settings, reporter: Reporter, plan: Plan,
                      weights: dict[str, str] | None) -> dict[str, Any]:
    rt = Runtime(loaded, run_dir, settings, reporter)
    for endpoint, path in (weights or {}).items():
        rt.serve_weights(endpoint, path)
    state = rt.state
    try:
        preflight(rt, plan)
        rows: dict[str, list[dict[str, Any]]] = {}
        fps: dict[str, str] = {}
        invocation = Meter()  # what this invocation did (stages skipped as done count nothing)
        for stage in loaded.config.stages:
            impl = implementation(stage)
            reads = [r for r in impl.reads() if r.stage]
            fp = _fingerprint(rt, impl, {r.key: fps.get(r.stage or "") for r in reads})
            fps[stage.name] = fp
            entry = state.stage(stage.name)
            if is_done(run_dir, stage.name, fp):
                rows[stage.name] = load_output(run_dir, stage.name)
                reporter.note(f"[{stage.name}] done earlier: {len(rows[stage.name])} rows (skipped)")
                entry["status"] = "done"
                # What the stage moved onto new weights stays moved, so later stages see the same weights.
                for endpoint, moved in dict(entry.get("weights") or {}).items():
                    rt.serve_weights(endpoint, moved)
                continue
            entry = state.data["stages"][stage.name] = {"status": "running", "type": stage.type}  # this run's record, afresh
            state.save()
            inputs = {r.key: rows.get(r.stage or "", []) for r in reads}
            started = time.monotonic()
            outlet = StageOutlet(rt, impl)
            result = await impl.run(RunInputs(rt.for_stage(stage.batch), inputs, outlet))
            for endpoint, moved in result.moves.items():
                rt.serve_weights(endpoint, moved)
            entry["weights"] = dict(result.moves)  # saved before the output is marked done: a rerun re-applies it
            state.save()
            records_in = len(inputs.get(impl.input_key() or "", []))
            if _all_failed(records_in, result):  # not marked done: a rerun, once the cause is fixed, runs it again
                entry.update(result.meter.to_json(), status="failed", records_in=records_in, records_out=0,
                             failed=len(result.failed))
                # The failed rows (their raw replies included) stay readable, outside the datasets a rerun trusts.
                kept = inside(run_dir / "failed", f"{stage.name}.jsonl")
                kept.parent.mkdir(parents=True, exist_ok=True)
                write_jsonl(kept, [f.to_json() for f in result.failed])
                raise _all_failed_error(stage.name, records_in, result, kept)
            # The entry is checked against the stage's stats type before the output is marked done.
            _record(entry, impl, result, records_in, round(time.monotonic() - started, 3))
            _write_outputs(rt, outlet, impl, result, fp, inputs)
            rows[stage.name] = plain_rows(result.rows)  # what a later stage reads, as it would from disk
            invocation.merge(result.meter)
            state.data["this_invocation"] = invocation.to_json()
            state.save()
            meter = result.meter
            reporter.note(f"[{stage.name}] {len(result.rows)} rows, {len(result.failed)} failed, {meter.calls} calls, {meter.cache_hits} cache hits, ${meter.cost:.4f}")
        state.data["status"] = "done"
        state.data["this_invocation"] = invocation.to_json()
    except BudgetExceeded:
        state.data["status"] = "budget_exhausted"
        raise
    except (KeyboardInterrupt, asyncio.CancelledError):
        state.data["status"] = "interrupted"
        raise
    except BaseException:
        state.data["status"] = "failed"
        raise
    finally:
        await _finish(rt, state)
    return json.loads((run_dir / "run.json").read_text())


async def _finish(rt: Runtime, state: Any) -> None:
    """The run's last bookkeeping, whatever ended it: servers and clients are closed and replies kept in memory are
    written even when saving run.json fails, and a failure here never hides the error that ended the run."""
    failure = sys.exc_info()[1]
    problems: list[str] = []
    try:
        state.data["spent_usd_total"] = round(rt.cache.total_cost(), 6)
        state.save()
    except Exception as exc:  # a full disk: run.json keeps what it said before
        problems.append(f"run.json not updated ({exc})")
    try:
        unsaved = await rt.aclose()
    except Exception as exc:
        unsaved, problems = 0, [*problems, f"closing: {exc}"]
    if unsaved:
        problems.append(f"{unsaved} paid replies could not be written to {rt.cache.path}")
    if not problems:
        return
    if failure is not None:  # the first error is the one the user must see; these go beside it
        rt.reporter.note("synthkd: also: " + "; ".join(problems))
        return
    raise StorageError("; ".join(problems), where=str(rt.run_dir),
                       fix="free disk space (or fix the file system) and run the same command again")


# Reasons a row fails for what the endpoint answered (or would not), as opposed to a stage's own judgement of the
# data (`wrong_answer`, `contaminated`, `duplicate`: a stage may rightly keep nothing).
_ENDPOINT_REASONS = ("http:", "gave_up:", "batch:", "bad_request", "unusable_reply", "empty_reply", "content_filter",
                     "refusal", "invalid_json", "schema_violation", "truncated", "no_reasoning")


def _all_failed(records_in: int, result: StageResult) -> bool:
    """Whether a stage made no rows from a non-empty input, every row failing for one reason that is the endpoint's
    (an endpoint that answers nothing usable: later stages would get nothing), which stops the run."""
    reasons = {f.reason for f in result.failed}
    if not records_in or result.rows or len(reasons) != 1:
        return False
    reason = reasons.pop()
    return any(reason == r or (r.endswith(":") and reason.startswith(r)) for r in _ENDPOINT_REASONS)


def _all_failed_error(name: str, records_in: int, result: StageResult, kept: Path) -> SynthkdError:
    """The one line for a stage whose every row failed the same way (its failed rows written to `kept`)."""
    sample = result.failed[0]
    detail = " ".join(str(sample.detail or sample.raw or "no detail").split())[:200]
    return SynthkdError(
        f"stage {name!r} produced no rows from {records_in} input rows: all {len(result.failed)} failed with reason "
        f"{sample.reason} (e.g. {detail}); the failed rows are in {kept}", where=f"stages.{name}",
        fix="fix the cause (the endpoint, its base_url, the prompts or the input), then run again: replies already "
        "paid for are reused from the cache")


def _write_outputs(rt: Runtime, outlet: StageOutlet, impl: StageImpl[Any], result: StageResult, fp: str,
                   inputs: dict[str, list[dict[str, Any]]]) -> None:
    """The extra datasets a stage returned, then its main dataset (rows checked against its row type).

    The main dataset's done-marker is what makes a rerun skip the stage, so it is written last: a process that dies
    in between leaves the stage undone, and the rerun writes everything again (from the cache, at no cost).
    """
    name = impl.name
    for extra in result.datasets:
        outlet.dataset(extra.suffix, extra.rows, extra.failed, row_type=extra.row_type, description=extra.description)
    passthrough = None if impl.row_type is not None else {k for r in inputs.get("input", [])[:100] for k in r}
    rt.write_dataset(name, result.rows, result.failed, row_type=impl.row_type, columns=passthrough, fingerprint=fp,
                     models=stage_models(rt, impl), fmt=impl.fmt, templates=stage_templates(rt, impl),
                     counts={"records_in": len(inputs.get(impl.input_key() or "", []))},
                     description=f"Output of stage {name} ({impl.cfg.type}).")


def _record(entry: dict[str, Any], impl: StageImpl[Any], result: StageResult, records_in: int, elapsed_s: float) -> None:
    """Fill the stage's run.json entry from its result, validated against its stats type."""
    entry.update(result.meter.to_json())
    if result.stats is not None:
        entry.update(result.stats.model_dump(exclude_none=True, exclude_unset=True))
    entry.update(status="done", type=impl.cfg.type, records_in=records_in, records_out=len(result.rows),
                 failed=len(result.failed), elapsed_s=elapsed_s, weights=dict(result.moves))
    impl.stats_type.strict(entry)
