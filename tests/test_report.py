"""The run report: HTML + markdown + PNG plots from run.json, checked by parsing and in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from synthkd.errors import ConfigError
from synthkd.report import write_report
from synthkd.report.plots import _plots_for_stage

EVIL = "<script>alert(1)</script>"
STAGE_NAMES = ["seeds", "lion", "dpo", "final eval"]
# lion: hard fraction + scores; dpo: pairs/margin + held-out; final eval: win/tie/loss. "seeds" has none.
EXPECTED_IMAGES = 5


def _usage(calls: int, cost: float = 0.0) -> dict[str, Any]:
    return {"calls": calls, "cache_hits": 1, "prompt_tokens": calls * 300, "completion_tokens": calls * 80, "cost": cost}


def _stage(type_: str, records_in: int, records_out: int, calls: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": type_, "status": "done", "records_in": records_in, "records_out": records_out, "failed": 0,
        "calls": calls, "cache_hits": 1 if calls else 0, "retries": 0, "prompt_tokens": calls * 300,
        "completion_tokens": calls * 80, "cost_usd": calls * 1e-4, "elapsed_s": calls * 0.05 + 0.001,
        "failures": {}, "by_endpoint": {"teacher": _usage(calls, calls * 1e-4)} if calls else {}, **extra,
    }


def _lion_iteration(i: int) -> dict[str, Any]:
    return {"iteration": i, "train_pool": 120 + 60 * (i - 1), "cache_pool": 120 + 60 * (i - 1),
            "hard_fraction": [0.31, 0.22, 0.18][i - 1], "mean_teacher_score": [8.4, 8.5, 8.5][i - 1],
            "mean_student_score": [6.1, 6.9, 7.4][i - 1], "new_instructions": 60,
            "generation_rejected": {"too_short": 4, "surplus": 11}}


def _dpo_iteration(i: int, dpo: dict[str, Any] | str, pairs: int) -> dict[str, Any]:
    return {"iteration": i, "pairs_mined": pairs,
            "margins": {"count": pairs, "min": 1, "p25": 2, "median": 3, "p75": 4, "max": 8, "mean": 3.2},
            "dpo": dpo, "heldout_vs_previous": {"n": 20, "wins": 9 - i, "ties": 6, "losses": 5 + i, "win_rate": (9 - i) / 20}}


def _run_json() -> dict[str, Any]:
    lion = _stage("lion", 120, 300, 2142, iterations=[_lion_iteration(i) for i in (1, 2, 3)])
    lion["failed"], lion["retries"] = 3, 3
    lion["failures"] = {"schema_violation": 2, EVIL: 1}
    lion["by_endpoint"] = {"teacher": _usage(524, 0.05), "student": _usage(540), "referee": _usage(1078, 0.02)}
    dpo = _stage("dpo", 300, 300, 800, iterations=[
        _dpo_iteration(1, {"train_loss": 0.61, "reward_accuracy": 0.7, "reward_margin": 0.42}, 48),
        _dpo_iteration(2, "skipped: no pairs", 0),
    ])
    final_eval = _stage("eval", 20, 20, 60, eval={
        "n": 20, "wins": 3, "ties": 10, "losses": 7, "student_share_of_teacher": 0.93,
        "mean_student_score": 6.1, "mean_teacher_score": 6.6, "exact_match": 0.25, "exact_match_n": 20})
    return {"pipeline": "lion", "status": "done", "invocations": 2, "spent_usd_total": 0.12,
            "started": "2026-11-22T06:49:37", "updated": "2026-11-22T07:30:00",
            "this_invocation": {"calls": 0, "cache_hits": 0, "cost_usd": 0.0},
            "stages": {"seeds": _stage("load", 0, 120, 0), "lion": lion, "dpo": dpo, "final eval": final_eval}}


class _Imgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.imgs.append(dict(attrs))


@pytest.fixture
def report(tmp_path: Path) -> tuple[Path, Path]:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps(_run_json(), indent=2))
    return write_report(run_dir)


def test_report_files_tables_and_images(report: tuple[Path, Path]) -> None:
    html_path, md_path = report
    assert html_path.is_file() and md_path.is_file()
    assert html_path.parent == md_path.parent == html_path.parent.parent / "report"
    page, md = html_path.read_text(), md_path.read_text()

    parser = _Imgs()
    parser.feed(page)
    srcs = [img["src"] or "" for img in parser.imgs]
    assert len(srcs) == EXPECTED_IMAGES, srcs
    for img, src in zip(parser.imgs, srcs):
        png = html_path.parent / src
        assert "/" not in src and png.is_file() and png.stat().st_size > 0, src
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
        assert img.get("alt") and img.get("width") and img.get("height"), img
    assert sorted(p.name for p in html_path.parent.glob("*.png")) == sorted(srcs)
    assert set(re.findall(r"\(([^()\s]+\.png)\)", md)) == set(srcs)

    stage_table = page.split("<h2>Stages</h2>", 1)[1].split("</table>", 1)[0]
    for name in STAGE_NAMES:
        assert f"<td>{name}</td>" in stage_table, name
        assert f"| {name} |" in md, name
    assert "2,142" in stage_table  # lion's calls, formatted
    assert "Exact match 25.0%" in page and "93.0% of the teacher" in page
    assert "skipped: no pairs" in page and "skipped: no pairs" in md
    assert "| seeds | none |" in md and "| referee | 1,078 |" in md
    assert not re.search(r"https?://", page), "the HTML page must be self-contained"


def test_text_from_run_json_is_escaped(report: tuple[Path, Path]) -> None:
    html_path, md_path = report
    page, md = html_path.read_text(), md_path.read_text()
    assert EVIL not in page and EVIL not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert page.count("<script>") == 1  # only the report's own image-check script


def test_rerun_replaces_plots_and_minimal_run(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps(_run_json()))
    write_report(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"stages": {"seeds": {"type": "load"}, "odd": "not a dict"}}))
    html_path, md_path = write_report(tmp_path)
    assert list(html_path.parent.glob("*.png")) == []  # stale plots from the first report are gone
    assert "<img" not in html_path.read_text() and "No plottable data" in md_path.read_text()


def test_hook_draws_skd_and_montessori_plots(tmp_path: Path) -> None:
    skd = {"type": "skd", "critic": {"pr_curve": {"precision": [1.0, 0.9, 0.7, 0.5], "recall": [0.1, 0.4, 0.7, 1.0],
                                                  "threshold": 0.6, "chosen": {"precision": 0.9, "recall": 0.4}}}}
    mont = {"type": "montessori", "iterations": [
        {"iteration": 1, "signal": {"kind": "influence", "values": [0.01 * (i - 40) for i in range(100)]}},
        {"iteration": 2, "signal": {"kind": "influence", "values": [0.01 * (i - 70) for i in range(100)]}}]}
    plots = _plots_for_stage("skd critic", skd, tmp_path) + _plots_for_stage("mont", mont, tmp_path)
    assert [fn.rsplit("-", 1)[1] for fn, _ in plots] == ["pr_curve.png", "signal.png"]
    assert all((tmp_path / fn).stat().st_size > 0 for fn, _ in plots)
    assert "threshold 0.6" in plots[0][1]
    assert "iteration 1: 100 candidates, 40 helpful; iteration 2: 100 candidates, 70 helpful" in plots[1][1]
    # Judge scores help above the scale's midpoint; ICL accuracy above the no-demonstration baseline.
    judge = {"type": "montessori", "iterations": [{"iteration": 1, "signal": {"kind": "judge", "values": [3, 6, 8, 5, 10]}}]}
    assert "5 candidates, 3 helpful" in _plots_for_stage("j", judge, tmp_path)[0][1]
    icl = {"type": "montessori", "iterations": [{"iteration": 1, "icl_baseline": 0.5, "signal": {"kind": "icl_accuracy", "values": [0.0, 0.5, 1.0, 1.0]}}]}
    assert "4 candidates, 2 helpful" in _plots_for_stage("i", icl, tmp_path)[0][1]
    assert _plots_for_stage("bare", {"type": "skd"}, tmp_path) == []
    assert _plots_for_stage("bare", {"type": "montessori", "iterations": [{"iteration": 1, "signal": "skipped"}]}, tmp_path) == []


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_missing_or_unreadable_run_json(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "run.json").write_text(content)
    with pytest.raises(ConfigError, match="run.json") as info:
        write_report(tmp_path)
    assert info.value.fix and "synthkd run" in info.value.fix


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if "CI" in os.environ:
            pytest.fail("chromium not found on PATH: CI must install Debian's `chromium` package (apt-get install -y chromium)")
        pytest.skip("chromium not installed; the headless image-loading check is skipped")
    return exe


def _images_in_browser(exe: str, html_path: Path, profile: Path) -> tuple[int, int]:
    """(total, loaded) images as counted by the page's own load handler in headless Chromium."""
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--allow-file-access-from-files", "--virtual-time-budget=5000",
           "--dump-dom", f"file://{html_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    total = re.search(r'data-images-total="(\d+)"', proc.stdout)
    loaded = re.search(r'data-images-loaded="(\d+)"', proc.stdout)
    assert total and loaded, f"the load handler did not run; DOM tail: {proc.stdout[-1500:]}"
    return int(total.group(1)), int(loaded.group(1))


def test_images_load_in_headless_chromium(report: tuple[Path, Path], tmp_path: Path) -> None:
    exe = _chromium()
    html_path, _ = report
    assert _images_in_browser(exe, html_path, tmp_path / "profile1") == (EXPECTED_IMAGES, EXPECTED_IMAGES)

    # The check can fail: a missing PNG is counted as not loaded.
    next(html_path.parent.glob("*.png")).unlink()
    assert _images_in_browser(exe, html_path, tmp_path / "profile2") == (EXPECTED_IMAGES, EXPECTED_IMAGES - 1)
