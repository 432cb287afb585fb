"""Secrets never reach a message or a file: crashes, API keys, URLs with credentials, templates."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, generate_pipeline, run_cli

SECRET = "sk-proj-SECRETKEY0123456789abcdef"
URL = "http://127.0.0.1:9/v1"  # nothing listens on port 9


def _edit(path: Path, fn: Callable[[dict[str, Any]], Any]) -> Path:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---- the CLI's error guard (issue 19, defect 15) -------------------------------------------------

def _cli_with_crash(tmp_path: Path, exc: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    """`synthkd validate` whose first library call raises `exc` (a Python expression), run as a user runs it."""
    code = (
        "import sys, synthkd.settings as s\n"
        f"def boom(*a, **k): raise {exc}\n"
        "s.Settings.from_environ = boom\n"
        "from synthkd.cli import main\n"
        f"sys.argv = ['synthkd', 'validate', {str(tmp_path / 'p.yaml')!r}]\n"
        "main()\n"
    )
    env = {**os.environ, "SYNTHKD_DEBUG": "1" if debug else ""}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


def test_unexpected_exception_is_one_line_without_secrets(tmp_path: Path) -> None:
    exc = f"ValueError('cannot reach http://user:{SECRET}@example.com/v1?key={SECRET}\\nsecond line')"
    proc = _cli_with_crash(tmp_path, exc)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout
    assert proc.stderr.splitlines() == [
        "synthkd: internal error: ValueError: cannot reach http://***@example.com/v1?***  (set SYNTHKD_DEBUG=1 for the traceback)"
    ]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = _cli_with_crash(tmp_path, "RuntimeError('boom')", debug=True)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "def boom" not in proc.stderr  # a traceback, without locals
    assert proc.stderr.rstrip().splitlines()[-1].startswith("synthkd: internal error: RuntimeError: boom")


def test_keyboard_interrupt_is_one_line(tmp_path: Path) -> None:
    proc = _cli_with_crash(tmp_path, "KeyboardInterrupt()")
    assert proc.returncode == 130
    assert len(proc.stderr.splitlines()) == 1 and "interrupted" in proc.stderr


def test_every_command_goes_through_the_guard() -> None:
    """Each command's body runs inside `_guard` (an unguarded one would print a traceback on a bug)."""
    import inspect

    from synthkd import cli

    assert cli.app.pretty_exceptions_enable is False and cli.app.pretty_exceptions_show_locals is False
    for command in cli.app.registered_commands:
        assert "_guard(body)" in inspect.getsource(command.callback), command.callback.__name__


# ---- a key pasted where its variable's name belongs (defect 12) ---------------------------------

def _one_error_line(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthkd: error:"), proc.stderr
    return lines[0]


@pytest.mark.parametrize("value, env", [(SECRET, {}), ("${env:SYNTHKD_TEST_OPENAI_KEY}", {"SYNTHKD_TEST_OPENAI_KEY": SECRET})],
                         ids=["pasted", "from-env"])
def test_key_in_api_key_env_is_refused_without_echo(tmp_path: Path, value: str, env: dict[str, str]) -> None:
    path = _edit(generate_pipeline(tmp_path, URL), lambda d: d["endpoints"]["teacher"].update(api_key_env=value))
    proc = run_cli("validate", str(path), env=env)
    line = _one_error_line(proc)
    assert "endpoints.teacher.api_key_env" in line and "NAME of the environment variable" in line
    assert SECRET not in proc.stdout + proc.stderr and "sk-" not in proc.stderr


def test_key_under_an_unknown_key_is_not_echoed(tmp_path: Path) -> None:
    path = _edit(generate_pipeline(tmp_path, URL), lambda d: d["endpoints"]["teacher"].update(api_key=SECRET))
    proc = run_cli("validate", str(path))
    line = _one_error_line(proc)
    assert "unknown key 'api_key'" in line and "api_key_env" in line and SECRET not in proc.stderr


# ---- templates: sandboxed, and inside prompts_dir (defect 16) -----------------------------------

GADGET = "{{ cycler.__init__.__globals__.os.environ }}"


def _template_pipeline(tmp_path: Path, template: str, files: dict[str, str]) -> Path:
    prompts = tmp_path / "prompts"
    prompts.mkdir(exist_ok=True)
    for name, text in files.items():
        (prompts / name).write_text(text)
    return _edit(generate_pipeline(tmp_path, URL),
                 lambda d: (d.update(prompts_dir=str(prompts)), d["stages"][1].update(template=template)))


@pytest.mark.parametrize("template, files, fragments", [
    ("../../../../etc/passwd", {}, ["stages.1.template", "outside prompts_dir", "prompts"]),
    ("/etc/passwd", {}, ["stages.1.template", "outside prompts_dir"]),
    ("env.jinja2", {"env.jinja2": GADGET}, ["env.jinja2:1", "Python internals"]),
    ("inc.jinja2", {"inc.jinja2": "{{ instruction }} {% include 'gone.jinja2' %}"}, ["stages.1.template", "gone.jinja2", "included by"]),
], ids=["dotdot", "absolute", "globals-gadget", "missing-include"])
def test_bad_template_is_refused_at_validate(tmp_path: Path, template: str, files: dict[str, str], fragments: list[str]) -> None:
    proc = run_cli("validate", str(_template_pipeline(tmp_path, template, files)), env={"SYNTHKD_TEST_OPENAI_KEY": SECRET})
    line = _one_error_line(proc)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert SECRET not in proc.stdout + proc.stderr and "root:" not in proc.stdout + proc.stderr


def test_templates_are_sandboxed_and_kept_inside_prompts_dir(tmp_path: Path) -> None:
    """What validate cannot see (a computed attribute name, a computed include, a symlink out) is stopped too."""
    from synthkd.errors import ConfigError
    from synthkd.prompts import PromptLibrary

    (tmp_path / "outside.txt").write_text(SECRET)
    root = tmp_path / "prompts"
    root.mkdir()
    (root / "link.jinja2").symlink_to(tmp_path / "outside.txt")
    (root / "computed.jinja2").write_text("{% set n = '__in' ~ 'it__' %}{{ cycler|attr(n) }}")
    (root / "dyn.jinja2").write_text("{% include name %}")
    (root / "loop.jinja2").write_text("{% for x in xs %}{% include 'part.jinja2' %}{% endfor %}")
    (root / "part.jinja2").write_text("[{{ x }}:{{ sep }}]")
    lib = PromptLibrary(root)
    with pytest.raises(ConfigError, match="outside prompts_dir"):
        lib.get("link.jinja2", "stages.1.template")
    with pytest.raises(ConfigError, match="stopped by the sandbox"):
        lib.get("computed.jinja2").render()
    with pytest.raises(ConfigError, match="not a file inside prompts_dir"):
        lib.get("dyn.jinja2").render(name="../outside.txt")
    loop = lib.get("loop.jinja2")  # an included template's variables are the stage's to provide
    assert loop.variables == {"xs", "sep"} and loop.render(xs=[1, 2], sep="-") == "[1:-][2:-]"
