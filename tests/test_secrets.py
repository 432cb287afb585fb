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

from tests.conftest import REPO, generate_pipeline, read_rows, run_cli

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
    """The one error line of a failed command (progress notes may come before it), with no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("synthkd: error:") and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    return errors[0]


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


# ---- URLs with credentials are redacted wherever they are shown or written (defect 13) ----------

PASSWORD, PATH_TOKEN = "hunter2-PASSWORD-7f3a", "gw-TOKEN-9c1e5b77"
URL_SECRETS = (PASSWORD, PATH_TOKEN, SECRET)


def test_redact_url() -> None:
    from synthkd.redact import redact_url, register_secret, scrub

    assert redact_url("https://user:pw@api.example.com:8443/v1?key=abc#frag") == "https://***@api.example.com:8443/v1?***#***"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    register_secret("tok-REGISTERED-1234", "${env:GW_TOKEN}")
    assert redact_url("https://gw.example/tok-REGISTERED-1234/v1") == "https://gw.example/${env:GW_TOKEN}/v1"
    assert scrub('unreachable at "http://u:p@h/v1?k=s": refused.') == 'unreachable at "http://***@h/v1?***": refused.'


def _secret_url_pipeline(tmp_path: Path, root_url: str, userinfo: bool = False) -> Path:
    """A generate pipeline whose URL has an `${env:}` path token (and a password, if asked), whose key is a
    secret, and whose unused second endpoint has a password in its URL (the card quotes the YAML)."""
    host = root_url.split("://", 1)[1]
    url = f"http://{f'user:{PASSWORD}@' if userinfo else ''}{host}/${{env:SYNTHKD_TEST_URL_PART}}/v1"

    def edit(d: dict[str, Any]) -> None:
        # A password in the URL is the endpoint's credential: it takes no api_key_env beside it.
        d["endpoints"]["teacher"].update(max_retries=0, **({} if userinfo else {"api_key_env": "SYNTHKD_TEST_OPENAI_KEY"}))
        d["endpoints"]["spare"] = {"base_url": f"https://user:{PASSWORD}@gateway.example/v1", "model": "spare"}

    return _edit(generate_pipeline(tmp_path, url, n=4), edit)


def _assert_no_secrets(texts: list[str], run_dir: Path | None = None) -> None:
    files = [p for p in run_dir.rglob("*") if p.is_file()] if run_dir else []
    for secret in URL_SECRETS:
        assert not any(secret in t for t in texts), secret
        for path in files:
            assert secret.encode() not in path.read_bytes(), (secret, path)


def test_url_credentials_reach_no_file_and_no_output(tmp_path: Path) -> None:
    from tests.fakeserver import running_server

    env = {"SYNTHKD_TEST_URL_PART": PATH_TOKEN, "SYNTHKD_TEST_OPENAI_KEY": SECRET}
    with running_server() as server:
        pipeline = _secret_url_pipeline(tmp_path, server.root_url)
        run_dir = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(run_dir), env=env)
        assert proc.returncode == 0, proc.stderr
        status = run_cli("status", str(run_dir))
    assert len(read_rows(run_dir, "answers")) == 4
    card = (run_dir / "datasets" / "answers" / "README.md").read_text()
    assert "https://***@gateway.example/v1" in card and "${env:SYNTHKD_TEST_URL_PART}" in card  # credentials hidden
    _assert_no_secrets([proc.stdout, proc.stderr, status.stdout, status.stderr], run_dir)


def test_a_password_in_the_url_is_sent_as_basic_auth_and_shown_nowhere(tmp_path: Path) -> None:
    from tests.fakeserver import running_server

    env = {"SYNTHKD_TEST_URL_PART": PATH_TOKEN}
    with running_server() as server:
        run_dir = tmp_path / "run"
        proc = run_cli("run", str(_secret_url_pipeline(tmp_path, server.root_url, userinfo=True)), "--out", str(run_dir), env=env)
        assert proc.returncode == 0, proc.stderr
        seen = server.stats().get("authorization", [])
    assert len(read_rows(run_dir, "answers")) == 4
    assert seen and all(h.startswith("Basic ") for h in seen), seen  # the preflight and every call
    _assert_no_secrets([proc.stdout, proc.stderr], run_dir)


def test_unreachable_url_message_hides_credentials(tmp_path: Path) -> None:
    env = {"SYNTHKD_TEST_URL_PART": PATH_TOKEN, "SYNTHKD_TEST_OPENAI_KEY": SECRET}
    proc = run_cli("run", str(_secret_url_pipeline(tmp_path, "http://127.0.0.1:9", userinfo=True)), "--out", str(tmp_path / "run"), env=env)
    line = _one_error_line(proc)
    assert "unreachable" in line and "http://***@127.0.0.1:9/${env:SYNTHKD_TEST_URL_PART}/v1" in line, line
    _assert_no_secrets([proc.stdout, proc.stderr], tmp_path / "run")


def test_query_string_in_base_url_is_refused_without_echo(tmp_path: Path) -> None:
    path = _edit(generate_pipeline(tmp_path, f"http://127.0.0.1:9/v1?key={SECRET}"), lambda d: None)
    proc = run_cli("validate", str(path))
    line = _one_error_line(proc)
    assert "query string" in line and "endpoints.teacher" in line
    assert SECRET not in proc.stdout + proc.stderr
