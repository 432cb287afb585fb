"""The `synthkd` command. The only place that turns errors into messages and exit codes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import click
import typer

from synthkd.errors import BudgetExceeded, SynthkdError
from synthkd.redact import scrub
from synthkd.jsonl import split_lines

# Typer's pretty exceptions are off, whatever the installed version's default: with show_locals a crash
# printed every local variable, API keys included. `_guard` below turns every exception into one line.
app = typer.Typer(add_completion=False, no_args_is_help=True, help="Black-box distillation of LLMs through synthetic data.",
                  pretty_exceptions_enable=False, pretty_exceptions_show_locals=False)

SetOpt = typer.Option(None, "--set", help="Override any key: --set dotted.key=value (value parsed as YAML). Repeatable.")


DEBUG_ENV = "SYNTHKD_DEBUG"


def _fail(message: str, code: int) -> None:
    typer.echo(f"synthkd: error: {scrub(message)}", err=True)
    raise typer.Exit(code)


def _guard(fn: Callable[[], Any]) -> Any:
    """Run a command body; bad input becomes one message and exit 2, never a traceback.

    Any other exception is a bug: one line (type and first line of its message, secrets scrubbed) and
    exit 1; SYNTHKD_DEBUG=1 prints the traceback as well.
    """
    try:
        return fn()
    except BudgetExceeded as exc:
        _fail(f"stopped: {exc.message()}", exc.exit_code)
    except SynthkdError as exc:
        _fail(exc.message(), exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("synthkd: interrupted. Everything received so far is cached; run the same command again to resume.", err=True)
        raise typer.Exit(130)
    except (typer.Exit, typer.Abort, click.ClickException):
        raise  # typer's own control flow (Exit is a RuntimeError)
    except Exception as exc:
        _report_internal(exc)
        raise typer.Exit(1) from None


def _report_internal(exc: Exception) -> None:
    """Report an unexpected exception in one line; the traceback only when SYNTHKD_DEBUG is set."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(exc)
    first = next(iter(str(exc).strip().splitlines()), "")[:500]
    detail = f"{type(exc).__name__}: {scrub(first)}" if first else type(exc).__name__
    typer.echo(f"synthkd: internal error: {detail}  (set {DEBUG_ENV}=1 for the traceback)", err=True)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("httpx", "datasets", "transformers", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)


@app.command()
def validate(pipeline: Path = typer.Argument(..., help="Pipeline YAML file."), set_: Optional[list[str]] = SetOpt) -> None:
    """Check a pipeline without any network: schema, templates, stage inputs, endpoints."""
    from synthkd.pipeline import load_pipeline
    from synthkd.settings import Settings
    from synthkd.validate import validate_pipeline

    def body() -> None:
        settings = Settings.from_environ()
        loaded = load_pipeline(pipeline, set_ or [], settings)
        plan = validate_pipeline(loaded, settings)
        typer.echo(f"{pipeline}: OK ({len(loaded.config.stages)} stages; endpoints used: {', '.join(sorted(plan.endpoints_used)) or 'none'})")

    _guard(body)


@app.command()
def run(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: runs/<pipeline name>/)."),
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Run a pipeline. Rerunning the same command resumes: cached replies and finished stages are reused."""
    from synthkd.pipeline import load_pipeline
    from synthkd.progress import Reporter
    from synthkd.runner import default_run_dir, run_pipeline
    from synthkd.settings import Settings

    _quiet_libraries()

    def body() -> None:
        settings = Settings.from_environ()
        loaded = load_pipeline(pipeline, set_ or [], settings)
        run_dir = out or default_run_dir(loaded)
        _check_run_dir(run_dir)
        reporter = Reporter()
        t0 = time.monotonic()
        reporter.note(f"synthkd: running {loaded.config.name} into {run_dir}")
        _run_async(run_pipeline(loaded, run_dir, settings, reporter))
        state = json.loads((run_dir / "run.json").read_text())
        now = state.get("this_invocation", {})
        calls, hits, cost = now.get("calls", 0), now.get("cache_hits", 0), now.get("cost_usd", 0.0)
        reporter.note(f"synthkd: done in {time.monotonic() - t0:.0f}s: {calls} calls, {hits} cache hits, ${cost:.4f}. Outputs: {run_dir}/datasets/, report: {run_dir}/run.json")
        from synthkd.pipeline import read_stage_stats
        from synthkd.scoring.heldout import heldout_table

        for name, stage in state.get("stages", {}).items():
            table = heldout_table(read_stage_stats(stage).model_dump(exclude_none=True))
            if table:
                typer.echo(f"\nheld-out, stage {name} (95% bootstrap intervals over prompts):\n{table}")

    _guard(body)


def _run_async(coro: Any) -> Any:
    """Run a coroutine. SIGINT and SIGTERM cancel it (so servers are stopped and run.json says
    "interrupted") instead of raising KeyboardInterrupt inside whatever callback is running; a
    second Ctrl-C falls back to Python's default and interrupts at once."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)

    def cancel() -> None:
        task.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, cancel)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or no signal support: default handling applies
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        loop.close()


@app.command()
def status(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Per-stage summary of a run (from its run.json)."""

    def body() -> None:
        path = run_dir / "run.json"
        if not path.is_file():
            raise _usage_error(f"no run.json in {run_dir}", fix="pass a directory written by `synthkd run`")
        from synthkd.pipeline import read_stage_stats
        from synthkd.scoring.heldout import heldout_lines

        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _usage_error(f"{path} cannot be read: {exc}", fix="pass a directory written by `synthkd run`") from None
        if not isinstance(state, dict):
            raise _usage_error(f"{path} is not a run record (a JSON {type(state).__name__}, not an object)",
                               fix="pass a directory written by `synthkd run`")
        if not isinstance(state.get("stages") or {}, dict):
            state["stages"] = {}  # a damaged record still shows its header
        spent = state.get("spent_usd_total")
        spent = spent if isinstance(spent, (int, float)) else 0.0
        typer.echo(f"{state.get('pipeline', '?')}: {state.get('status')}  (invocations: {state.get('invocations')}, spent ${spent:.4f})")
        for name, entry in (state.get("stages") or {}).items():
            s = read_stage_stats(entry)
            count = lambda v: "-" if v is None else v  # noqa: E731
            typer.echo(
                f"  {name:<28} {s.status or '?':<10} in {count(s.records_in):>6}  out {count(s.records_out):>6}  "
                f"failed {count(s.failed):>4}  calls {s.calls:>6}  hits {s.cache_hits:>6}  ${s.cost_usd:.4f}"
            )
            for line in s.lines() + heldout_lines(s.model_dump(exclude_none=True)):
                typer.echo(f"    {line}")
        from synthkd.client.batch_store import batch_summary

        batches = batch_summary(run_dir / "cache.sqlite")
        waiting = [b for b in batches if not b["collected"]]
        if batches:
            typer.echo(f"  batches: {len(batches)} submitted, {len(waiting)} not collected yet"
                       + (" (the next run polls them; their requests are not submitted again)" if waiting else ""))
        for b in waiting:
            typer.echo(f"    {b['endpoint']}: {b['batch_id'] or '(id not recorded; found by its file on rerun)'} "
                       f"{b['status']}, {b['requests']} requests")

    _guard(body)


@app.command()
def show(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    stage: str = typer.Argument(..., help="Dataset name (a stage, or e.g. lion.iter1.discrimination)."),
    n: int = typer.Option(3, "-n", help="Rows to print."),
    failed: bool = typer.Option(False, "--failed", help="Show failed rows instead."),
) -> None:
    """Print the first rows of a dataset a run wrote."""

    def body() -> None:
        from synthkd.paths import inside

        names = sorted(p.name for p in (run_dir / "datasets").glob("*") if p.is_dir()) if (run_dir / "datasets").is_dir() else []
        d = inside(run_dir / "datasets", stage)  # a name like ".." or "../x" leads out of the run: refused
        if not d.is_dir():
            raise _usage_error(f"no dataset {stage!r} in {run_dir}", fix=f"one of: {', '.join(names) or '(none yet)'}")
        path = d / ("failed.jsonl" if failed else "data.jsonl")
        try:
            lines = split_lines(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise _usage_error(f"{path} cannot be read: {exc}", fix="rerun the stage with `synthkd run`") from None
        typer.echo(f"{path} ({len(lines)} rows)")
        for line in lines[:n]:
            try:
                typer.echo(json.dumps(json.loads(line), indent=2, ensure_ascii=False)[:3000])
            except ValueError:  # a damaged line is shown as it is
                typer.echo(line[:3000])

    _guard(body)


@app.command()
def serve(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
    endpoint: str = typer.Argument(..., help="Endpoint name (must have a `serve` block)."),
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Start an endpoint's vLLM server by hand and keep it up until Ctrl-C."""
    from synthkd.pipeline import load_pipeline
    from synthkd.serve.vllm_server import ServerManager
    from synthkd.settings import Settings

    def body() -> None:
        settings = Settings.from_environ()
        loaded = load_pipeline(pipeline, set_ or [], settings)
        cfg = loaded.config.endpoints.get(endpoint)
        if cfg is None or not cfg.served:
            raise _usage_error(f"endpoint {endpoint!r} is not one synthkd serves", fix="name an endpoint with `serve:` and no base_url")
        manager = ServerManager(settings, Path("runs") / "serve-logs", loaded.prompts_dir.parent, ray=loaded.config.ray)
        try:
            servers = manager.ensure(endpoint, cfg, [cfg.model])
            urls = ", ".join(s.base_url for s in servers)
            typer.echo(f"serving {endpoint} ({servers[0].model_path}) at {urls} as model {cfg.model!r}; Ctrl-C stops it")
            while not any(s.death() for s in servers):
                time.sleep(1)
            died = next(s for s in servers if s.death())
            raise _usage_error(f"a server stopped: {(died.death() or '').splitlines()[0]}", fix=f"see {died.log_path}")
        except KeyboardInterrupt:
            typer.echo("stopped", err=True)
        finally:
            manager.stop_all()

    _guard(body)


@app.command()
def train(
    kind: str = typer.Argument(..., help="sft or dpo."),
    data: Path = typer.Option(..., "--data", help="A datasets directory (e.g. runs/lion/datasets/lion) or a JSONL file in TRL's format."),
    model: str = typer.Option(..., "--model", help="Base weights: directory, hub name, or tiny:NAME."),
    out: Path = typer.Option(..., "--out", help="Checkpoint directory (same layout as pipeline checkpoints)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="SFTConfig/DPOConfig field: --set learning_rate=2e-5; LoRA: --set lora.r=16; --set seed=1."),
    processes: int = typer.Option(1, "--processes", help="Training processes; more than 1 runs under `accelerate launch` (DDP; gloo on a CPU). Log: OUT.train.log."),
    accelerate_config: Optional[Path] = typer.Option(None, "--accelerate-config", help="accelerate config file passed to `accelerate launch --config_file` as is (FSDP, DeepSpeed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out even where it holds files that are not a synthkd checkpoint."),
) -> None:
    """Train the student from any dataset synthkd wrote, without a pipeline (TRL SFT or DPO)."""
    from synthkd.settings import Settings
    from synthkd.train.cli_train import run_train

    _quiet_libraries()

    def body() -> None:
        metrics = run_train(kind, data, model, out, set_ or [], Settings.from_environ().home, processes, accelerate_config, overwrite)
        typer.echo(f"trained {kind} checkpoint at {out}: {json.dumps(metrics.to_json())}")

    _guard(body)


@app.command("eval")
def eval_(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML with an `eval` stage (its input must come from a load stage)."),
    model: Optional[str] = typer.Option(None, "--model", help="Student checkpoint to serve (default: the student endpoint's own weights)."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Which eval stage (default: the last one)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: runs/<pipeline name>-eval/)."),
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Evaluate a student against the teacher on its own: the eval stage and the load stages it reads."""
    from synthkd.pipeline import load_pipeline
    from synthkd.evalcmd import eval_only
    from synthkd.progress import Reporter
    from synthkd.runner import run_pipeline
    from synthkd.settings import Settings

    _quiet_libraries()

    def body() -> None:
        settings = Settings.from_environ()
        loaded, stage_name, student = eval_only(load_pipeline(pipeline, set_ or [], settings), stage)
        run_dir = out or Path("runs") / f"{loaded.config.name}-eval"
        _check_run_dir(run_dir)
        weights = {student: model} if model else None
        _run_async(run_pipeline(loaded, run_dir, settings, Reporter(), weights=weights))
        summary = json.loads((run_dir / "run.json").read_text())["stages"][stage_name].get("eval", {})
        typer.echo(json.dumps(summary, indent=2))

    _guard(body)


@app.command()
def efficacy(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML with the teacher and student endpoints, a `pool` load stage and "
                                    "optionally held-out load stages."),
    heldout: Optional[list[Path]] = typer.Option(None, "--heldout", help="A held-out JSONL file (id, instruction, optional gold); "
                                                 "repeatable; each is reported as its own set, named after the file."),
    out: Path = typer.Option(Path("runs/efficacy"), "--out", help="Output directory (resumable: rerun the same command)."),
    tier: str = typer.Option("quick", "--tier", help="quick (about an hour on 2 CPU cores) or thorough (a GPU machine)."),
    budget_usd: Optional[float] = typer.Option(None, "--budget-usd", help="Teacher spend cap per arm, USD (default: the tier's "
                                               "answer count at the probe's measured price)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps per arm (default: the tier's)."),
    extra_steps: Optional[int] = typer.Option(None, "--extra-steps", help="Extra steps of the DPO group (DPO vs the same SFT steps)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Training seeds per arm (the baseline gets at least 2)."),
    heldout_limit: Optional[int] = typer.Option(None, "--heldout-limit", help="Prompts per held-out set (default: the tier's; 0: all)."),
    arms: Optional[str] = typer.Option(None, "--arms", help="Comma-separated arms (default: all): kd, kd_sampled, lion_control, "
                                       "lion, kd_more_sft, kd_dpo, kd_dpo_nll. The baseline kd always runs."),
    teacher: str = typer.Option("teacher", "--teacher", help="Teacher endpoint name in the pipeline."),
    student: str = typer.Option("student", "--student", help="Student endpoint name (served by synthkd: it is trained)."),
    pool: str = typer.Option("pool", "--pool", help="Load stage holding the prompt pool."),
    batch: int = typer.Option(8, "--batch", help="per_device_train_batch_size of every arm."),
    iterations: int = typer.Option(3, "--iterations", help="Lion's K (and its control's); steps are split evenly over them."),
    max_tokens: int = typer.Option(64, "--max-tokens", help="Cap on every teacher and student answer."),
) -> None:
    """Which method gives the better student per teacher dollar, on YOUR teacher and student: every arm gets the same
    teacher spend (a hard cap), the same steps and schedule, answer-only loss and no gold; paired statistics decide."""
    from synthkd.efficacy.command import Efficacy
    from synthkd.efficacy.options import EfficacyOptions
    from synthkd.progress import Reporter
    from synthkd.settings import Settings

    _quiet_libraries()

    def body() -> None:
        if tier not in ("quick", "thorough"):
            raise _usage_error(f"unknown tier {tier!r}", "use --tier quick or --tier thorough")
        for name, value in (("--steps", steps), ("--extra-steps", extra_steps), ("--seeds", seeds), ("--batch", batch), ("--max-tokens", max_tokens),
                            ("--iterations", iterations)):
            if value is not None and value < 1:
                raise _usage_error(f"{name} must be at least 1 (got {value})", f"give {name} a positive whole number")
        if budget_usd is not None and not budget_usd > 0:
            raise _usage_error(f"--budget-usd must be above 0 (got {budget_usd})", "give the spend cap per arm in dollars, e.g. --budget-usd 5")
        if heldout_limit is not None and heldout_limit < 0:
            raise _usage_error(f"--heldout-limit must be 0 (all) or more (got {heldout_limit})", "give a number of prompts per set")
        _check_run_dir(out)
        opts = EfficacyOptions(
            pipeline=pipeline, out=out, tier=tier, heldout_files=tuple(heldout or ()), teacher=teacher, student=student, pool=pool,
            budget_usd=budget_usd, steps=steps, extra_steps=extra_steps, arm_seeds=seeds,
            baseline_seeds=max(2, seeds) if seeds else None, heldout_limit=heldout_limit, batch=batch, max_tokens=max_tokens,
            iterations=iterations,
            arms=tuple(a.strip() for a in (arms or "").split(",") if a.strip()), command="synthkd efficacy " + " ".join(sys.argv[2:]),
        )
        reporter = Reporter()
        runner = Efficacy(opts, Settings.from_environ(), reporter)
        result = _run_async(runner.run())
        typer.echo((out / "efficacy.md").read_text(encoding="utf-8"))
        reporter.note(f"synthkd efficacy: done in {(result.wall_s or 0.0) / 60:.1f} min: {out / 'efficacy.json'}, {out / 'efficacy.md'}, {out / 'efficacy.html'}")

    _guard(body)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Write RUN_DIR/report/index.html (and report.md) with tables and plots of run.json."""
    from synthkd.report import write_report

    def body() -> None:
        html, md = write_report(run_dir)
        typer.echo(f"report: {html}  (markdown: {md})")

    _guard(body)


def _check_run_dir(run_dir: Path) -> None:
    """The run directory is a directory (or can become one), before anything is started or paid for."""
    blocker = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise _usage_error(f"--out {run_dir} cannot be a run directory: {blocker} is a file", fix="pass a directory path (new or from an earlier run)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        writable = os.access(run_dir, os.W_OK | os.X_OK)
    except OSError as exc:
        writable, why = False, exc.strerror or type(exc).__name__
    else:
        why = "permission denied"
    if not writable:
        raise _usage_error(f"--out {run_dir} cannot be created or written: {why}", fix="pass a directory you can write to")


def _usage_error(what: str, fix: str) -> SynthkdError:
    """A bad command-line argument: reported like bad pipeline input (exit code 2)."""
    from synthkd.errors import ConfigError

    return ConfigError(what, fix=fix)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # outside a command's body (e.g. while its imports load)
        typer.echo("synthkd: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # likewise: a command body's own exceptions are turned into lines by _guard
        _report_internal(exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
