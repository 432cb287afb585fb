"""Bad input: one clear message (what, where, how to fix), exit code 2, no traceback, no call spent."""

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, generate_pipeline, lion_pipeline, run_cli

URL = "http://127.0.0.1:9/v1"  # nothing listens on port 9


def _edit(path: Path, fn) -> Path:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _expect_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
    assert len(errors) == 1 and errors[0].startswith("synthkd: error:"), proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nendpoints:\n  a: {model: m\nstages: []\n")
    _expect_error(run_cli("validate", str(path)), "bad.yaml:", "malformed YAML", "Fix:")


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = _edit(generate_pipeline(tmp_path, URL), lambda d: d["stages"][1].update(temprature=0.3))
    line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if "temprature" in l)
    _expect_error(run_cli("validate", str(path)), f"gen.yaml:{line}: stages.1.temprature", "unknown key 'temprature'")


def test_unknown_stage_type(tmp_path: Path) -> None:
    path = _edit(generate_pipeline(tmp_path, URL), lambda d: d["stages"][1].update(type="genrate"))
    _expect_error(run_cli("validate", str(path)), "unknown stage type", "load, generate, sft, lion, dpo")


def test_missing_template_file(tmp_path: Path) -> None:
    path = _edit(generate_pipeline(tmp_path, URL), lambda d: d["stages"][1].update(template="nope.jinja2"))
    _expect_error(run_cli("validate", str(path)), "template file not found", "stages.1.template")


def test_undefined_template_variable(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "ask.jinja2").write_text("Answer {{ instruction }} in the style of {{ persona }}.")
    path = _edit(generate_pipeline(tmp_path, URL), lambda d: (d.update(prompts_dir=str(prompts)), d["stages"][1].update(template="ask.jinja2")))
    _expect_error(run_cli("validate", str(path)), "undefined variable(s) persona", "stages.1.template")


def test_missing_dataset_column(tmp_path: Path) -> None:
    path = _edit(lion_pipeline(tmp_path, URL), lambda d: d["stages"][0].update(columns={"instruction": "prompt"}))
    _expect_error(run_cli("validate", str(path)), "has no column(s) instruction", "stages.1.input")


def test_unknown_endpoint_reference(tmp_path: Path) -> None:
    path = _edit(lion_pipeline(tmp_path, URL), lambda d: d["stages"][1].update(referee="judge"))
    _expect_error(run_cli("validate", str(path)), "unknown endpoint 'judge'", "stages.1.referee")


def test_unknown_sft_key(tmp_path: Path) -> None:
    path = _edit(lion_pipeline(tmp_path, URL), lambda d: d["stages"][1]["sft"].update(epochs=3))
    _expect_error(run_cli("validate", str(path)), "unknown SFTConfig key(s): epochs", "stages.1.sft")


def test_missing_api_key_variable(tmp_path: Path) -> None:
    path = _edit(generate_pipeline(tmp_path, URL), lambda d: d["endpoints"]["teacher"].update(api_key_env="SYNTHKD_TEST_KEY"))
    proc = run_cli("run", str(path), "--out", str(tmp_path / "run"), env={"SYNTHKD_TEST_KEY": ""})
    _expect_error(proc, "SYNTHKD_TEST_KEY", "not set", "export SYNTHKD_TEST_KEY")


def test_unreachable_endpoint_spends_nothing(tmp_path: Path) -> None:
    path = generate_pipeline(tmp_path, URL)
    proc = run_cli("run", str(path), "--out", str(tmp_path / "run"))
    _expect_error(proc, "endpoint 'teacher' is unreachable", "base_url")


def test_unset_env_interpolation(tmp_path: Path) -> None:
    path = _edit(generate_pipeline(tmp_path, URL), lambda d: d["endpoints"]["teacher"].update(base_url="${env:SYNTHKD_TEST_URL}"))
    _expect_error(run_cli("validate", str(path)), "SYNTHKD_TEST_URL is not set", "endpoints.teacher.base_url")


def test_bad_override(tmp_path: Path) -> None:
    path = generate_pipeline(tmp_path, URL)
    _expect_error(run_cli("validate", str(path), "--set", "endpoints.teacher.concurrency=0"), "endpoints.teacher.concurrency", "greater than or equal to 1")
    _expect_error(run_cli("validate", str(path), "--set", "stages.nosuch.x=1"), "no list item 'nosuch'")


def test_overrides_and_env_interpolation_apply(tmp_path: Path) -> None:
    path = _edit(generate_pipeline(tmp_path, URL), lambda d: d["endpoints"]["teacher"].update(model="${env:SYNTHKD_TEST_MODEL:-fallback}"))
    proc = run_cli("validate", str(path), "--set", "stages.answers.samples=3", "--set", "endpoints.teacher.base_url=http://x/v1")
    assert proc.returncode == 0, proc.stderr
    from synthkd.config.loader import load_pipeline
    from synthkd.settings import Settings

    loaded = load_pipeline(path, ["stages.answers.samples=3", "endpoints.teacher.base_url=http://x/v1"], Settings.from_environ({"SYNTHKD_TEST_MODEL": "m1"}))
    assert loaded.config.stages[1].samples == 3
    assert loaded.config.endpoints["teacher"].base_url == "http://x/v1"
    assert loaded.config.endpoints["teacher"].model == "m1"
    assert "${env:SYNTHKD_TEST_MODEL:-fallback}" in loaded.yaml_text  # cards keep the reference, not the value


@pytest.mark.parametrize("pipeline", sorted((REPO / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_pipelines_validate(pipeline: Path) -> None:
    proc = run_cli("validate", str(pipeline))
    assert proc.returncode == 0, proc.stderr


def test_bad_trainer_value_caught_before_any_call(tmp_path: Path) -> None:
    path = _edit(lion_pipeline(tmp_path, URL), lambda d: d["stages"][1]["sft"].update(learning_rate="fast"))
    _expect_error(run_cli("validate", str(path)), "SFTConfig.learning_rate must be a number", "stages.1.sft.learning_rate")


def test_exponent_floats_are_numbers(tmp_path: Path) -> None:
    path = lion_pipeline(tmp_path, URL)
    path.write_text(path.read_text().replace("learning_rate: 0.001", "learning_rate: 1e-3"))
    assert "learning_rate: 1e-3" in path.read_text()
    proc = run_cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr
