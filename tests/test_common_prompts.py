"""Shared prompts live in prompts/common/; the names they had before (lion/answer.jinja2, ...) keep working.

Both ways: an old name with today's prompts/, the new defaults with a prompts_dir copied from ours before the
move. And a stage a run finished before the move stays done: its fingerprint does not change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from synthkd.pipeline import implementation, load_pipeline
from synthkd.progress import Reporter
from synthkd.prompts import MOVED, PromptLibrary
from synthkd.runner import _fingerprint
from synthkd.runtime import Runtime
from synthkd.settings import Settings
from tests.conftest import REPO, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server

OLD_NAMES = {"answer": "lion/answer.jinja2", "pairwise": "lion/referee.jinja2"}


def old_layout(tmp: Path) -> Path:
    """A prompts_dir as users copied ours before the move: the moved files under their old names, no common/."""
    root = tmp / "old-prompts"
    shutil.copytree(REPO / "prompts", root)
    for new, old in MOVED.items():
        (root / old).parent.mkdir(parents=True, exist_ok=True)
        (root / new).rename(root / old)
    (root / "common").rmdir()
    return root


def test_the_shared_prompts_are_in_common_and_the_old_names_read_them() -> None:
    lib = PromptLibrary(REPO / "prompts")
    for new, old in MOVED.items():
        assert new.startswith("common/") and (REPO / "prompts" / new).is_file() and not (REPO / "prompts" / old).exists()
        assert lib.get(old).source == lib.get(new).source == (REPO / "prompts" / new).read_text()
        assert lib.get(old).name == old  # error messages name the template as the pipeline does


def test_the_new_names_read_a_prompts_dir_copied_before_the_move(tmp_path: Path) -> None:
    root = old_layout(tmp_path)
    lib = PromptLibrary(root)
    for new, old in MOVED.items():
        assert lib.get(new).source == (root / old).read_text() == (REPO / "prompts" / new).read_text()
    (root / "mine.jinja2").write_text("{% include 'common/answer.jinja2' %}")  # includes find either name too
    assert lib.get("mine.jinja2").render(instruction="hi") == "hi"


def test_a_name_with_neither_file_is_the_error_it_was(tmp_path: Path) -> None:
    from synthkd.errors import ConfigError

    root = old_layout(tmp_path)
    (root / "lion" / "answer.jinja2").unlink()
    with pytest.raises(ConfigError, match=r"template file not found: .*common/answer\.jinja2"):
        PromptLibrary(root).get("common/answer.jinja2")


@pytest.mark.parametrize("pipeline", ["dpo", "montessori"])
def test_validate_accepts_both_names_with_both_layouts(tmp_path: Path, pipeline: str) -> None:
    path = str(REPO / "pipelines" / f"{pipeline}.yaml")
    old_names = {"dpo": ["stages.teacher_answers.template=lion/answer.jinja2", "stages.dpo.templates.answer=lion/answer.jinja2",
                         "stages.dpo.templates.pairwise=lion/referee.jinja2", "stages.dpo.templates.pointwise=dpo/score.jinja2"],
                 "montessori": ["stages.montessori.answer_template=lion/answer.jinja2",
                                "stages.montessori.judge_template=dpo/score.jinja2"]}[pipeline]
    sets = [arg for s in old_names for arg in ("--set", s)]
    old_dir = ["--set", f"prompts_dir={old_layout(tmp_path)}"]
    for args in ([], sets, old_dir, old_dir + sets):
        proc = run_cli("validate", path, *args)
        assert proc.returncode == 0, (args, proc.stderr)


def test_tiny_models_are_the_same_with_either_layout(tmp_path: Path) -> None:
    """A tiny model's tokenizer is trained on the pinned prompts: moved, they are read in the same order, and a
    project copied from ours before the move (served from its own root) gets the same tiny models too."""
    from synthkd.serve import tiny

    old_root = tmp_path
    old_layout(tmp_path).rename(old_root / "prompts")
    shutil.copytree(REPO / "data", old_root / "data")
    assert len(tiny._corpus_files(old_root)) == len(tiny._corpus_files(REPO)) == len(tiny._PINNED_CORPUS)  # none lost
    assert [f.read_bytes() for f in tiny._corpus_files(old_root)] == [f.read_bytes() for f in tiny._corpus_files(REPO)]
    assert all(tiny._digest(old_root, name) == tiny._digest(REPO, name) for name in ("teacher", "student"))


def _eval_pipeline(tmp: Path, prompts: Path, base_url: str, templates: dict[str, str] | None) -> Path:
    lines = (REPO / "data" / "lion" / "heldout_instructions.jsonl").read_text().splitlines()[:3]
    (tmp / "heldout.jsonl").write_text("\n".join(lines) + "\n")
    stage = {"name": "eval", "type": "eval", "input": "heldout", "judge_sampling": {"max_tokens": 64, "seed": 1},
             **({"templates": templates} if templates else {})}
    spec = {"name": "ev", "prompts_dir": str(prompts),
            "endpoints": {n: remote_endpoint(base_url, n) for n in ("teacher", "judge", "student")},
            "stages": [{"name": "heldout", "type": "load", "path": str(tmp / "heldout.jsonl")}, stage]}
    path = tmp / "ev.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _eval_fingerprint(tmp: Path, prompts: Path, templates: dict[str, str] | None) -> str:
    loaded = load_pipeline(_eval_pipeline(tmp, prompts, "http://127.0.0.1:9/v1", templates), [])
    rt = Runtime(loaded, tmp / "run", Settings.from_environ(), Reporter(enabled=False))
    load, ev = (implementation(s) for s in loaded.config.stages)
    return _fingerprint(rt, ev, {"input": _fingerprint(rt, load, {})})


def test_the_fingerprint_is_the_one_before_the_move_whichever_names_and_layout(tmp_path: Path) -> None:
    """Before the move the defaults were the old names, read from the old files: that fingerprint is the
    old names with the old layout (an explicit value dumps as its default did). Every other combination
    must give it too, or finished stages of old run directories would run (and pay) again on resume."""
    old_dir = old_layout(tmp_path)
    before = _eval_fingerprint(tmp_path, old_dir, OLD_NAMES)
    assert _eval_fingerprint(tmp_path, old_dir, None) == before
    assert _eval_fingerprint(tmp_path, REPO / "prompts", None) == before
    assert _eval_fingerprint(tmp_path, REPO / "prompts", OLD_NAMES) == before
    assert _eval_fingerprint(tmp_path, REPO / "prompts", {"answer": "common/answer.jinja2", "pairwise": "lion/referee.jinja2"}) == before
    # Different text under the two names: two templates, told apart; and a changed template still counts.
    (old_dir / "common").mkdir()
    (old_dir / "common" / "answer.jinja2").write_text("Answer briefly: {{ instruction }}")
    assert _eval_fingerprint(tmp_path, old_dir, OLD_NAMES) == before
    assert _eval_fingerprint(tmp_path, old_dir, None) != before
    (old_dir / "lion" / "referee.jinja2").write_text((old_dir / "lion" / "referee.jinja2").read_text() + "\nBe fair.")
    assert _eval_fingerprint(tmp_path, old_dir, OLD_NAMES) != before


def test_a_stage_finished_before_the_move_is_done_on_resume(tmp_path: Path) -> None:
    """The run a user made before the move (old names, old files), resumed with the new defaults and prompts/."""
    run_dir = tmp_path / "run"
    with running_server() as server:
        before = _eval_pipeline(tmp_path, old_layout(tmp_path), server.base_url, OLD_NAMES)
        proc = run_cli("run", str(before), "--out", str(run_dir))
        assert proc.returncode == 0, proc.stderr
        sent = server.stats().get("chat_requests", 0)
        assert sent > 0
        after = _eval_pipeline(tmp_path, REPO / "prompts", server.base_url, None)
        proc = run_cli("run", str(after), "--out", str(run_dir))
        assert proc.returncode == 0, proc.stderr
        assert "[eval] done earlier" in proc.stdout + proc.stderr
        assert server.stats().get("chat_requests", 0) == sent
    assert run_json(run_dir)["stages"]["eval"]["status"] == "done"
