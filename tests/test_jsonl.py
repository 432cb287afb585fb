"""Datasets whose text holds Unicode line separators stay one row per line for every reader.

A CI run once failed here: a tiny teacher's reply held U+2028, which `json.dumps(ensure_ascii=False)`
leaves raw and `str.splitlines()` splits on, so the failed-rows file no longer parsed line by line.
"""

import json
from pathlib import Path

from datasets import load_from_disk

from synthkd.outputs import CardInfo, load_output, write_output
from synthkd.train.launch import Job, write_job
from synthkd.jsonl import read_jsonl
from tests.conftest import run_cli

AWKWARD = "para one\u2028para two\u2029three\x85four\x1cfive\x0bsix\x0cseven\nnew line \u00e9 \u4e2d"


def _rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "messages": [{"role": "user", "content": f"q{i} {AWKWARD}"},
                                         {"role": "assistant", "content": f"a{i} {AWKWARD}"}]} for i in range(n)]


def test_dataset_files_split_into_their_rows_for_any_reader(tmp_path: Path) -> None:
    rows, failed = _rows(3), [{"id": "f0", "error": AWKWARD, "raw": AWKWARD}]
    write_output(tmp_path, "answers", rows, failed, CardInfo("p", "", "answers"), "fp")
    d = tmp_path / "datasets" / "answers"
    for name, expected in (("data.jsonl", rows), ("failed.jsonl", failed)):
        text = (d / name).read_text(encoding="utf-8")
        # What other training code does with a JSON-lines file: splitlines, then json.loads each line.
        assert [json.loads(line) for line in text.splitlines()] == expected
        assert "\u00e9" in text  # still readable UTF-8, not \\u-escaped throughout
    assert load_output(tmp_path, "answers") == rows
    assert [dict(r) for r in load_from_disk(str(d))] == rows
    proc = run_cli("show", str(tmp_path), "answers", "--failed", "-n", "1")
    assert proc.returncode == 0, proc.stderr
    assert "(1 rows)" in proc.stdout and "para two" in proc.stdout


def test_training_job_rows_survive_line_separators(tmp_path: Path) -> None:
    rows = _rows(4)
    spec = json.loads(write_job(Job("sft", rows, "tiny:student", tmp_path / "ckpt", {}, None, 0, "fp")).read_text())
    # The accelerate worker reads these rows back (synthkd.train.worker); they must be the rows written.
    assert read_jsonl(spec["rows"]) == [{"messages": r["messages"]} for r in rows]
    assert len(Path(spec["rows"]).read_text(encoding="utf-8").splitlines()) == len(rows)
