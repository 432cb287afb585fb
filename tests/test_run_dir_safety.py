"""Nothing of the user's is deleted and nothing is billed twice: stage names cannot lead a write or a
deletion outside the run's datasets, and one run directory takes one run at a time."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from synthkd.paths import UnsafePathError, inside
from tests.conftest import REPO, generate_pipeline, read_rows, run_cli, run_json
from tests.fakeserver import running_server


def _rename_last_stage(path: Path, name: str) -> Path:
    data = yaml.safe_load(path.read_text())
    data["stages"][-1]["name"] = name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _one_line_exit_2(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("synthkd: error:")]
    assert len(errors) == 1 and proc.stderr.rstrip().splitlines()[-1] == errors[0], proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "-x", "answers.tmp", "seeds.more"])
def test_a_stage_name_that_leads_outside_its_dataset_is_refused_before_anything_is_touched(tmp_path: Path, name: str) -> None:
    """A stage named `..` used to pass validate and then delete the whole run directory (cache.sqlite
    with every paid reply) when its output was written; `.` deleted every other stage's dataset.
    `seeds.more` would be overwritten by the `seeds` stage's own NAME.<suffix> datasets."""
    out = tmp_path / "run"
    (out / "datasets" / "keep").mkdir(parents=True)
    (out / "cache.sqlite").write_text("paid replies")
    path = _rename_last_stage(generate_pipeline(tmp_path, "http://127.0.0.1:9/v1", n=3), name)
    for command in (["validate", str(path)], ["run", str(path), "--out", str(out)]):
        _one_line_exit_2(run_cli(*command), "stages.1.name")
    assert (out / "cache.sqlite").read_text() == "paid replies" and (out / "datasets" / "keep").is_dir()


def test_paths_synthkd_replaces_stay_inside_their_directory(tmp_path: Path) -> None:
    base = tmp_path / "run" / "datasets"
    base.mkdir(parents=True)
    assert inside(base, "answers") == base / "answers"
    for bad in ("..", ".", "", "a/../..", "/etc", "x\0y"):
        with pytest.raises(UnsafePathError):
            inside(base, bad)
    (base / "link").symlink_to(tmp_path)  # a link inside the directory that leads out of it
    with pytest.raises(UnsafePathError):
        inside(base, "link", "run")


def test_a_second_run_on_the_same_directory_is_refused_and_nothing_is_paid_twice(tmp_path: Path) -> None:
    """Two `synthkd run` on one --out used to pay every request twice and overrun budget_usd together."""
    log = tmp_path / "server.jsonl"
    # One request at a time, 1.2 s each: the first run pays for about 5 s, time enough for a second to start
    # on a loaded machine.
    with running_server(latency_ms=1200, capacity=1, log_path=log, log_sync=True) as server:
        path = generate_pipeline(tmp_path, server.base_url, n=4)
        out = tmp_path / "run"
        command = [sys.executable, "-m", "synthkd.cli", "run", str(path), "--out", str(out)]
        first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (log.is_file() and log.read_text().strip()) and time.monotonic() < deadline:  # the first run is paying
            assert first.poll() is None, first.communicate()[1][-2000:]
            time.sleep(0.05)
        second = run_cli("run", str(path), "--out", str(out))
        _one_line_exit_2(second, "in use by another synthkd run", f"pid {first.pid}", "--out")
        _, stderr = first.communicate(timeout=120)
        assert first.returncode == 0, stderr[-2000:]
        assert len(server.log_entries()) == 4 == len(read_rows(out, "answers"))  # each request once, by the first run
        assert run_json(out)["status"] == "done"
        # The lock goes with the process: the next run on the directory proceeds (everything cached).
        proc = run_cli("run", str(path), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert run_json(out)["this_invocation"]["calls"] == 0 and len(server.log_entries()) == 4
