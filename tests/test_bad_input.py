"""Bad input: one clear message (what, where, how to fix), exit code 2, no traceback, no call spent."""

from pathlib import Path

import pytest
import yaml

from tests.conftest import generate_pipeline, lion_pipeline, run_cli

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
    _expect_error(run_cli("validate", str(path)), "unknown stage type", "load, generate, sft, lion, dpo, eval, decontaminate, rationale, skd, montessori, dedup")


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


@pytest.mark.needs_trl  # validating a `sft:`/`dpo:` block needs TRL
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
    from synthkd.pipeline import load_pipeline
    from synthkd.settings import Settings

    loaded = load_pipeline(path, ["stages.answers.samples=3", "endpoints.teacher.base_url=http://x/v1"], Settings.from_environ({"SYNTHKD_TEST_MODEL": "m1"}))
    assert loaded.config.stages[1].samples == 3
    assert loaded.config.endpoints["teacher"].base_url == "http://x/v1"
    assert loaded.config.endpoints["teacher"].model == "m1"
    assert "${env:SYNTHKD_TEST_MODEL:-fallback}" in loaded.yaml_text  # cards keep the reference, not the value


@pytest.mark.needs_trl  # validating a `sft:`/`dpo:` block needs TRL
def test_bad_trainer_value_caught_before_any_call(tmp_path: Path) -> None:
    path = _edit(lion_pipeline(tmp_path, URL), lambda d: d["stages"][1]["sft"].update(learning_rate="fast"))
    _expect_error(run_cli("validate", str(path)), "SFTConfig.learning_rate must be a number", "stages.1.sft.learning_rate")


@pytest.mark.needs_trl  # validating a `sft:`/`dpo:` block needs TRL
def test_exponent_floats_are_numbers(tmp_path: Path) -> None:
    path = lion_pipeline(tmp_path, URL)
    path.write_text(path.read_text().replace("learning_rate: 0.001", "learning_rate: 1e-3"))
    assert "learning_rate: 1e-3" in path.read_text()
    proc = run_cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr


def test_pipeline_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "utf16.yaml"
    path.write_bytes(b"\xff\xfe\x00name: x")
    for command in ("validate", "run"):
        proc = run_cli(command, str(path), *(["--out", str(tmp_path / "run")] if command == "run" else []))
        _expect_error(proc, "utf16.yaml", "not UTF-8 text", "offset 0", "Fix: save the file as UTF-8")
    assert not (tmp_path / "run").exists()


def test_pipeline_path_is_a_directory(tmp_path: Path) -> None:
    _expect_error(run_cli("validate", str(tmp_path)), str(tmp_path), "is a directory", "Fix:")


def test_pipeline_file_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process: as root, chmod 000 would not stop the read.
    from synthkd.pipeline import load_pipeline
    from synthkd.errors import ConfigError

    path = generate_pipeline(tmp_path, URL)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    message = info.value.message()
    assert "\n" not in message
    assert f"{path}: cannot read the pipeline file: Permission denied" in message and "Fix:" in message


def test_rejected_without_api_key_says_to_set_api_key_env(tmp_path: Path) -> None:
    from tests.fakeserver import running_server

    with running_server(faults=[{"kind": "server_error", "status": 401, "rate": 1.0, "times": -1}]) as server:
        path = generate_pipeline(tmp_path, server.base_url, n=2)
        proc = run_cli("run", str(path), "--out", str(tmp_path / "run"))
        _expect_error(proc, "endpoints.teacher", "refused the request (401)", "sends no API key", "Fix: set `api_key_env:`")
        assert "$None" not in proc.stderr and "(none set)" not in proc.stderr

        keyed = _edit(path, lambda d: d["endpoints"]["teacher"].update(api_key_env="SYNTHKD_TEST_KEY"))
        proc = run_cli("run", str(keyed), "--out", str(tmp_path / "run2"), env={"SYNTHKD_TEST_KEY": "sk-wrong"})
        _expect_error(proc, "endpoints.teacher.api_key_env", "refused the request (401)", "$SYNTHKD_TEST_KEY holds a valid key")
        assert "sends no API key" not in proc.stderr and "sk-wrong" not in proc.stderr


@pytest.mark.parametrize("config_class, block", [("SFTConfig", "sft"), ("DPOConfig", "dpo")])
def test_training_block_without_trl_is_an_error(monkeypatch: pytest.MonkeyPatch, config_class: str, block: str) -> None:
    # A machine without the training extras: `validate` must not say OK for a pipeline that trains.
    import sys

    from synthkd.errors import ConfigError
    from synthkd.train.common import check_trainer_args

    monkeypatch.setitem(sys.modules, "trl", None)  # `import trl` now raises ImportError
    where = f"lion.yaml:12: stages.1.{block}"
    with pytest.raises(ConfigError) as info:
        check_trainer_args(config_class, {"num_train_epochs": 1}, where)
    message = info.value.message()
    assert "\n" not in message
    assert message.startswith(f"{where}: TRL (needed by training with this `{block}:` block) is not installed")
    assert "Fix: pip install -e '.[train]'" in message and "make setup" in message
    assert info.value.exit_code == 2


def test_train_without_trl_stops_before_building_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from synthkd.errors import ConfigError
    from synthkd.train.cli_train import run_train

    monkeypatch.setitem(sys.modules, "trl", None)
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    home = tmp_path / "home"
    with pytest.raises(ConfigError) as info:
        run_train("sft", data, "tiny:student", tmp_path / "out", ["learning_rate=1e-3"], home)
    assert info.value.message().startswith("--set: TRL (needed by `synthkd train sft`) is not installed")
    assert not home.exists()  # no tiny model was built (nor a GGUF converted) before the error


@pytest.mark.needs_trl
def test_trainer_args_checked_once_per_library_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`validate` remembers trainer argument sets TRL accepted (building TRL's config costs 4-5 s of every
    validate and run); a new set is checked in full, and one that fails is never remembered."""
    from synthkd.errors import ConfigError
    from synthkd.train import common

    accepted = tmp_path / "home" / "validated" / "trainer-args.txt"
    common.check_trainer_args("SFTConfig", {"learning_rate": 1e-4}, "sft", accepted)
    assert accepted.is_file()
    with pytest.raises(ConfigError):
        common.check_trainer_args("SFTConfig", {"learning_rate": "fast"}, "sft", accepted)
    calls: list[dict] = []
    monkeypatch.setattr(common, "_check_trainer_args", lambda name, args, where: calls.append(args))
    common.check_trainer_args("SFTConfig", {"learning_rate": 1e-4}, "sft", accepted)  # remembered: not built again
    common.check_trainer_args("SFTConfig", {"learning_rate": "fast"}, "sft", accepted)  # never accepted: checked
    common.check_trainer_args("DPOConfig", {"learning_rate": 1e-4}, "dpo", accepted)  # another config: checked
    assert calls == [{"learning_rate": "fast"}, {"learning_rate": 1e-4}]
