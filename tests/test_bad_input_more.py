"""More bad input: each gets one line, exit 2, no traceback and no call spent; a row at fault
becomes a failed row with its reason. The pipeline loader is also fuzzed (hypothesis)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthkd.config.loader import load_pipeline
from synthkd.errors import ConfigError, SynthkdError
from synthkd.settings import Settings
from tests.conftest import REPO, generate_pipeline, run_cli
from tests.test_bad_input import _expect_error

URL = "http://127.0.0.1:9/v1"  # nothing listens on port 9

# ---- the pipeline file ----------------------------------------------------------------------
_BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))  # 10^9 values

YAML_CASES = {
    "duplicate_top_key": ("name: x\nstages: []\nendpoints: {}\nstages: []\n", ["p.yaml:4", "duplicate key 'stages' (first at line 2)"]),
    "duplicate_nested_key": ("name: x\nendpoints:\n  t: {model: m, base_url: u, model: n}\nstages: []\n",
                             ["p.yaml:3", "duplicate key 'model'"]),
    "alias_bomb": (_BOMB, ["p.yaml:", "expand to more than"]),
    "recursive_alias": ("name: &a [*a]\nstages: []\n", ["p.yaml:1", "refers to its own anchor"]),
    "deep_nesting": ("name: " + "[" * 3000, ["p.yaml", "nested too deeply"]),
    "bad_int_tag": ("name: x\nseed: !!int seven\nstages: []\n", ["p.yaml", "cannot be read as the type its tag names"]),
    "python_tag": ("name: !!python/object:os.system {}\nstages: []\n", ["p.yaml:1", "malformed YAML"]),
    "empty_file": ("", ["p.yaml", "must be a YAML mapping"]),
    "only_a_comment": ("# nothing yet\n", ["p.yaml", "must be a YAML mapping"]),
    "a_list": ("- name: x\n", ["p.yaml", "must be a YAML mapping"]),
    "tab_indent": ("name: x\nstages:\n\t- name: a\n", ["p.yaml:3", "malformed YAML"]),
    "two_documents": ("name: x\n---\nname: y\n", ["p.yaml:", "malformed YAML"]),
    "stages_not_a_list": ("name: x\nendpoints: {}\nstages: {a: 1}\n", ["p.yaml:3: stages"]),
    "stage_not_a_mapping": ("name: x\nendpoints: {}\nstages: [load]\n", ["p.yaml:3: stages.0"]),
    "name_is_a_list": ("name: [a, b]\nendpoints: {}\nstages: []\n", ["p.yaml:1: name"]),
    "numeric_keys": ("name: x\nendpoints: {1: {model: m}}\nstages: []\n", ["p.yaml:"]),
}


def config_error(fn: Any, *fragments: str) -> str:
    """The one-line message of the ConfigError `fn()` raises, checked for `fragments`."""
    with pytest.raises(SynthkdError) as info:
        fn()
    message = info.value.message()
    assert info.value.exit_code == 2 and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_bad_pipeline_file(tmp_path: Path, case: str) -> None:
    text, fragments = YAML_CASES[case]
    path = tmp_path / "p.yaml"
    path.write_text(text)
    config_error(lambda: load_pipeline(path, [], Settings.from_environ()), *fragments)


@pytest.mark.parametrize("case", ["duplicate_top_key", "alias_bomb"])
def test_bad_pipeline_file_cli(tmp_path: Path, case: str) -> None:
    text, fragments = YAML_CASES[case]
    path = tmp_path / "p.yaml"
    path.write_text(text)
    t0 = time.monotonic()
    proc = run_cli("validate", str(path))
    assert time.monotonic() - t0 < 10
    _expect_error(proc, *fragments)


def test_alias_bomb_refused_quickly() -> None:
    """10^9 values once expanded: refused in well under 2 s, before anything walks it."""
    from synthkd import yamlio

    t0 = time.monotonic()
    with pytest.raises(yamlio.RefusedYAML, match="expand to more than"):
        yamlio.load(_BOMB)
    assert time.monotonic() - t0 < 2


def test_pipeline_with_bom_and_crlf_loads(tmp_path: Path) -> None:
    path = generate_pipeline(tmp_path, URL)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert load_pipeline(path, [], Settings.from_environ()).config.name == "gen"


@pytest.mark.parametrize("assignment, fragment", [
    ("stages.1.samples=[", "not valid YAML"),
    ("stages.1.samples=&a [*a]", "refers to its own anchor"),
    ("name", "has no '='"),
])
def test_bad_set_value(tmp_path: Path, assignment: str, fragment: str) -> None:
    path = generate_pipeline(tmp_path, URL)
    config_error(lambda: load_pipeline(path, [assignment], Settings.from_environ()), fragment)


# ---- fuzzing the loader: only SynthkdError, never another exception -------------------------
_SHIPPED = sorted((REPO / "pipelines").glob("*.yaml"))
_TOKENS = [":", "-", " ", "\n", "\t", "[", "]", "{", "}", "&a ", "*a", "!!str ", "!!int ", "!!float ", "null", "~", "0", "-1",
           "1e999", '"', "'", "? ", "#", "|", ">", "\ufeff", "${env:X}", "${env:", "stages:", "type: load", "yes", ".nan",
           "<<: ", "\u2028", "!!binary ", "2001-12-14"]


def _load_text(tmp: Path, text: str, overrides: list[str] | None = None) -> None:
    path = tmp / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_pipeline(path, overrides or [], Settings.from_environ({"X": "1"}))
    except SynthkdError:
        pass


def _mutate(text: str, edits: list[tuple[int, int, int, int]]) -> str:
    """Apply (op, line, position, token) edits to a pipeline's lines."""
    lines = text.split("\n")
    for op, j, pos, tok in edits:
        j %= len(lines)
        if op == 0:
            pos %= len(lines[j]) + 1
            lines[j] = lines[j][:pos] + _TOKENS[tok % len(_TOKENS)] + lines[j][pos:]
        elif op == 1 and len(lines) > 1:
            del lines[j]
        elif op == 2:
            lines.insert(j, lines[pos % len(lines)])
        else:
            lines[j] = lines[j][: pos % (len(lines[j]) + 1)]
    return "\n".join(lines)


def test_loader_fuzz_mutated_pipelines(tmp_path: Path) -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    texts = [p.read_text() for p in _SHIPPED]
    edit = st.tuples(st.integers(0, 3), st.integers(0, 200), st.integers(0, 200), st.integers(0, 100))

    @hypothesis.settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @hypothesis.given(st.integers(0, len(texts) - 1), st.lists(edit, min_size=1, max_size=5))
    def check(which: int, edits: list[tuple[int, int, int, int]]) -> None:
        _load_text(tmp_path, _mutate(texts[which], edits))

    check()


def test_loader_fuzz_yaml_documents_and_overrides(tmp_path: Path) -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8))
    doc = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(
        st.sampled_from(["name", "stages", "endpoints", "type", "model", "path", "input", "seed", "x"]), inner, max_size=4)),
        max_leaves=20)
    override = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["name", "stages.0", "stages.0.name", "endpoints.t", "seed", "a.b", "stages.x.y"]),
                         st.text(max_size=10))

    @hypothesis.settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @hypothesis.given(doc, st.lists(override, max_size=2))
    def check(data: Any, overrides: list[str]) -> None:
        _load_text(tmp_path, yaml.safe_dump(data), overrides)

    check()
