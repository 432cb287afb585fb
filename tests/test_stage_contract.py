"""The stage contract: every stage type declares itself once, and the defects that came from declaring
it in several places stay fixed (status on any run, empty datasets, templates validate checks,
failed rows that reach failed.jsonl with their reason, bad --out)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from synthkd.pipeline import implementation_class, stage_types
from synthkd.records import Record, StageStats
from synthkd.stages.base import StageImpl
from tests.conftest import REPO, check_run_outputs, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server
from tests.test_skd_pipeline import _spec as skd_spec
from tests.test_skd_pipeline import _write as skd_write


def test_every_stage_type_has_one_implementation_with_typed_outputs() -> None:
    types = stage_types()
    assert {"load", "generate", "sft", "lion", "dpo", "eval", "decontaminate", "rationale", "skd", "montessori", "dedup"} <= set(types)
    for name, config in types.items():
        impl = implementation_class(config)
        assert issubclass(impl, StageImpl), name
        assert issubclass(impl.stats_type, StageStats), name
        assert impl.row_type is None or issubclass(impl.row_type, Record), name


def _write(tmp: Path, stages: list[dict], endpoints: dict | None = None) -> Path:
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "prompts_dir": str(REPO / "prompts"), "endpoints": endpoints or {}, "stages": stages}))
    return path


def test_dedup_and_an_empty_output_are_datasets_that_load(tmp_path: Path) -> None:
    rows = [{"id": "a", "instruction": "Name a colour."}, {"id": "b", "instruction": "name  a COLOUR."},
            {"id": "c", "instruction": "Name a fruit."}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = _write(tmp_path, [
        {"name": "rows", "type": "load", "path": str(data)},
        {"name": "unique", "type": "dedup", "input": "rows"},
        # Against itself, every record is contaminated: an empty output.
        {"name": "nothing", "type": "decontaminate", "input": "unique", "against": "rows", "ngram": 2},
    ])
    out = tmp_path / "run"
    proc = run_cli("run", str(path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in read_rows(out, "unique")] == ["a", "c"]
    assert [(r["id"], r["reason"]) for r in read_rows(out, "unique", failed=True)] == [("b", "duplicate")]
    counts = check_run_outputs(out)
    assert counts["nothing"] == 0 and len(read_rows(out, "nothing", failed=True)) == 2
    from datasets import load_from_disk

    assert set(load_from_disk(str(out / "datasets" / "nothing")).column_names) == {"id", "instruction"}
    status = run_cli("status", str(out)).stdout
    assert "1 duplicates dropped" in status
    assert run_json(out)["stages"]["unique"]["duplicates"] == 1


def test_status_and_report_read_every_kind_of_stage_entry(tmp_path: Path) -> None:
    """A DPO iteration has no train_pool (status once stopped with KeyError: 'train_pool')."""
    state = {"pipeline": "p", "status": "done", "invocations": 1, "stages": {
        "dpo": {"status": "done", "type": "dpo", "records_in": 4, "records_out": 3, "failed": 1, "calls": 10,
                "iterations": [{"iteration": 1, "pairs_mined": 3, "dpo": {"reward_margin": 0.25}, "failed": 1,
                                "heldout_vs_previous": {"win_rate": 0.5}}]},
        "lion": {"status": "done", "type": "lion", "iterations": [{"iteration": 1, "train_pool": 4, "cache_pool": 4}]},
        "skd": {"status": "done", "type": "skd", "skd": {"corpus": {"raw": 10, "filtered": 4}}},
        "montessori": {"status": "done", "type": "montessori", "iterations": [{"iteration": 1, "pairs": 2}]},
        "old": {"status": "done", "type": "a-type-this-version-does-not-know", "calls": "x"},
    }}
    (tmp_path / "run.json").write_text(json.dumps(state))
    proc = run_cli("status", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "iter 1: pairs 3  dpo reward margin 0.250  failed 1" in proc.stdout
    assert "iter 1: pools 4/4" in proc.stdout and "corpus 10 -> 4" in proc.stdout
    assert run_cli("report", str(tmp_path)).returncode == 0


@pytest.mark.needs_trl  # validate checks the montessori stage's dpo:/sft: blocks against TRL
def test_validate_checks_the_templates_montessori_uses(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    (prompts / "common" / "answer.jinja2").unlink()
    proc = run_cli("validate", str(REPO / "pipelines" / "montessori.yaml"), "--set", f"prompts_dir={prompts}")
    assert proc.returncode == 2, proc.stderr
    assert "stages.2.answer_template" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("validate", str(REPO / "pipelines" / "montessori.yaml"), "--set", f"prompts_dir={prompts}",
                   "--set", "stages.montessori.answer_template=dpo/score.jinja2")
    assert proc.returncode == 2 and "answer" in proc.stderr  # that template reads a variable the responder does not provide


def test_out_naming_a_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = _write(tmp_path, [{"name": "rows", "type": "load", "path": str(REPO / "data" / "lion" / "seed_instructions.jsonl")}])
    for out in (blocker, blocker / "run"):
        proc = run_cli("run", str(path), "--out", str(out))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.count("synthkd: error:") == 1 and "is a file" in proc.stderr
    assert blocker.read_text() == "x"


@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_skd_failed_judge_calls_reach_failed_jsonl_instead_of_scoring_zero(tmp_path: Path, synthkd_home: Path) -> None:
    spec = skd_spec(tmp_path, "")
    faults = [{"kind": "server_error", "rate": 0.15, "times": -1, "status": 500}]
    with running_server(faults=faults) as server:
        spec["endpoints"] = {n: remote_endpoint(server.base_url, n, max_retries=1) for n in ("teacher", "judge", "student")}
        spec["stages"][2]["critic"] = {"kind": "llm", "target_recall": 0.8}
        out = tmp_path / "run"
        proc = run_cli("run", str(skd_write(tmp_path, spec)), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    failed = read_rows(out, "skd", failed=True)
    steps = {f["step"] for f in failed}
    assert "critic" in steps and {f["reason"] for f in failed} == {"gave_up:500"}
    raw, scored = read_rows(out, "skd.raw"), read_rows(out, "skd.scored")
    critic_failed = [f for f in failed if f["step"] == "critic"]
    # Every raw triple is either scored (by a judge that answered) or in failed.jsonl; none is scored 0 for a failed call.
    assert len(scored) + len(critic_failed) == len(raw)
    assert {f["id"] for f in critic_failed}.isdisjoint({r["id"] for r in scored})
    s = run_json(out)["stages"]["skd"]
    assert s["failed"] == len(failed) and s["skd"]["failed_calls"]["critic"] == len(critic_failed)
    check_run_outputs(out)


@pytest.mark.needs_trl
@pytest.mark.parametrize("pipeline", sorted(p.name for p in (REPO / "pipelines").glob("*.yaml")))
def test_every_shipped_pipeline_validates(pipeline: str) -> None:
    # In-process (TRL's configs are imported once for all of them): what `synthkd validate` runs.
    from synthkd.pipeline import load_pipeline
    from synthkd.settings import Settings
    from synthkd.validate import validate_pipeline

    settings = Settings.from_environ()
    plan = validate_pipeline(load_pipeline(REPO / "pipelines" / pipeline, [], settings), settings)
    if pipeline == "efficacy.yaml":  # read by `synthkd efficacy`, which checks its endpoints and pool stage itself
        from synthkd.efficacy.command import Efficacy
        from synthkd.efficacy.options import EfficacyOptions
        from synthkd.progress import Reporter

        Efficacy(EfficacyOptions(pipeline=REPO / "pipelines" / pipeline, out=REPO / "runs" / "unused"), settings, Reporter())
        return
    assert plan.endpoints_used and all(plan.columns.values())


@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_rationale_pipeline_as_shipped_against_the_test_server(tmp_path: Path, synthkd_home: Path) -> None:
    """pipelines/rationale.yaml with every endpoint on the test server (the other shipped pipelines train
    served models, so their runs are in the slow tier): status, report and every dataset check out."""
    out = tmp_path / "run"
    with running_server() as server:
        remote = [arg for n in ("teacher", "judge", "student")
                  for arg in ("--set", f"endpoints.{n}.base_url={server.base_url}", "--set", f"endpoints.{n}.serve=null")]
        proc = run_cli("run", str(REPO / "pipelines" / "rationale.yaml"), "--out", str(out), *remote,
                       "--set", "stages.tasks.limit=24", "--set", "stages.testset.limit=8", env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    counts = check_run_outputs(out)
    assert counts["eval"] == 8 and counts["rationales.per_input"] == counts["clean_tasks"]
    stages = run_json(out)["stages"]
    assert [s["type"] for s in stages.values()] == ["load", "load", "decontaminate", "rationale", "sft", "eval"]
