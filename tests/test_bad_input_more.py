"""More bad input: each gets one line, exit 2, no traceback and no call spent; a row at fault
becomes a failed row with its reason. The pipeline loader is also fuzzed (hypothesis)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthkd.pipeline import load_pipeline
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
    # An extra zero or three: billions of requests built before any message, without the cap.
    "samples_typo": ("name: x\nendpoints: {t: {model: m, base_url: 'http://127.0.0.1:9/v1'}}\nstages:\n"
                     "  - {name: s, type: load, path: d.jsonl}\n"
                     "  - {name: g, type: generate, input: s, endpoint: t, template: a.j2, samples: 100000000}\n",
                     ["p.yaml:5: stages.1.samples", "less than or equal to 1000"]),
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


# ---- input data -----------------------------------------------------------------------------
def _data_pipeline(tmp: Path, data: Path | str, base_url: str = URL, template: str = "lion/answer.jinja2",
                   prompts: Path | None = None, **generate: Any) -> Path:
    """load(data) + generate against `base_url`."""
    doc = {
        "name": "gen", "prompts_dir": str(prompts or REPO / "prompts"),
        "endpoints": {"teacher": {"base_url": base_url, "model": "teacher", "concurrency": 4, "timeout_s": 5}},
        "stages": [
            {"name": "seeds", "type": "load", "path": str(data)},
            {"name": "answers", "type": "generate", "input": "seeds", "endpoint": "teacher", "template": template,
             "sampling": {"max_tokens": 16, "seed": 1}, **generate},
        ],
    }
    path = tmp / "gen.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run(pipeline: Path, out: Path) -> dict[str, Any]:
    """`synthkd run` in-process (for tests where the CLI is not the point)."""
    import asyncio

    from synthkd.progress import Reporter
    from synthkd.runner import run_pipeline

    settings = Settings.from_environ()
    return asyncio.run(run_pipeline(load_pipeline(pipeline, [], settings), out, settings, Reporter()))


def _rows(tmp: Path, name: str, content: str | bytes) -> list[dict[str, Any]]:
    from synthkd.stages.load import read_records

    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return read_records(path, "stages.0.path")


BAD_DATA = {
    "jsonl_array_line": ("d.jsonl", '{"instruction": "a"}\n\n[1, 2]\n', ["d.jsonl:3", "JSON array, not an object"]),
    "jsonl_string_line": ("d.jsonl", '"x"\n', ["d.jsonl:1", "JSON string, not an object"]),
    "jsonl_invalid_line": ("d.jsonl", '{"instruction": "a"}\n{"instruction": \n', ["d.jsonl:2", "invalid JSON"]),
    "not_utf8": ("d.jsonl", b'{"instruction": "caf\xe9"}\n', ["d.jsonl:1", "not UTF-8", "0xe9"]),
    "json_scalar": ("d.json", "3", ["holds a JSON number, not rows"]),
    "json_array_of_strings": ("d.json", '["a", "b"]', ["item 0", "JSON string, not an object"]),
    "json_ragged_columns": ("d.json", '{"instruction": ["a", "b"], "gold": ["1"]}', ["columns of different lengths"]),
    "json_invalid": ("d.json", '{"instruction": [\n', ["d.json:2", "invalid JSON"]),
    "csv": ("d.csv", "instruction\na\n", ["unsupported data format: .csv"]),
    "parquet_that_is_not": ("d.parquet", "hello", ["cannot read", "as parquet"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_input_data(tmp_path: Path, case: str) -> None:
    name, content, fragments = BAD_DATA[case]
    config_error(lambda: _rows(tmp_path, name, content), *fragments)


def test_jsonl_line_not_an_object_cli_spends_nothing(tmp_path: Path) -> None:
    from tests.fakeserver import running_server

    data = tmp_path / "seeds.jsonl"
    data.write_text('{"instruction": "Name a colour."}\n[1, 2]\n')
    with running_server(log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        proc = run_cli("run", str(_data_pipeline(tmp_path, data, server.base_url)), "--out", str(tmp_path / "run"))
        assert server.log_entries() == []
    _expect_error(proc, "seeds.jsonl:2", "not an object")


@pytest.mark.parametrize("content", [
    '[{"instruction": "a", "gold": 1}, {"instruction": "b", "gold": "x"}]',  # a list of objects
    '{"instruction": ["a", "b"], "gold": [1, "x"]}',  # column layout
    '{"data": [{"instruction": "a", "gold": 1}, {"instruction": "b", "gold": "x"}]}',
    '{"instruction": "a", "gold": 1}\n{"instruction": "b", "gold": "x"}\n',  # JSON lines under .json (datasets' to_json)
    '\ufeff[{"instruction": "a", "gold": 1}, {"instruction": "b", "gold": "x"}]',  # a BOM
])
def test_json_layouts_are_rows(tmp_path: Path, content: str) -> None:
    rows = _rows(tmp_path, "d.json", content)
    assert [(r["instruction"], r["gold"]) for r in rows] == [("a", 1), ("b", "x")]


def test_directory_of_jsonl_shards_read_in_name_order(tmp_path: Path) -> None:
    from synthkd.stages.load import LoadStage
    from synthkd.stages.load import load_rows

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "part-10.jsonl").write_text('{"instruction": "c"}\n')
    (shards / "part-01.jsonl").write_text('{"instruction": "a"}\n{"instruction": "b"}\n')
    (shards / "notes.txt").write_text("ignored")
    cfg = LoadStage(name="seeds", type="load", path=str(shards))
    rows = load_rows(cfg, shards, "stages.0.path")
    assert [(r["id"], r["instruction"]) for r in rows] == [("0", "a"), ("1", "b"), ("2", "c")]
    config_error(lambda: load_rows(cfg, tmp_path / "empty", "x") if (tmp_path / "empty").mkdir() is None else None,
                 "neither a saved `datasets` dataset nor a directory")


def test_mixed_types_in_a_text_column_become_text(tmp_path: Path) -> None:
    from datasets import Dataset

    from synthkd.stages.load import LoadStage
    from synthkd.stages.load import load_rows

    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "a", "gold": 3, "n": 1, "tags": ["a"]}\n{"q": "b", "gold": "x", "n": 2.5, "tags": 5}\n'
                    '{"q": "c", "gold": null, "n": 3}\n{"q": "d", "gold": true, "n": 4, "tags": {"k": 1}}\n')
    rows = load_rows(LoadStage(name="s", type="load", path=str(data)), data, "x")
    assert [r["gold"] for r in rows] == ["3", "x", None, "true"]
    assert [r.get("tags") for r in rows] == ['["a"]', "5", None, '{"k": 1}']
    assert [r["n"] for r in rows] == [1, 2.5, 3, 4]  # numbers only: left as numbers
    assert len(Dataset.from_list(rows)) == 4  # what writing the stage's output does


def test_row_problems_are_failed_rows_and_cost_nothing(tmp_path: Path) -> None:
    """A row lacking a column the template reads, a null or blank value it sends, and a template that fails
    on one row's values: failed rows with their reasons, no request sent for them; the good row is answered."""
    from datasets import load_from_disk

    from tests.conftest import read_rows
    from tests.fakeserver import running_server

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "ask.jinja2").write_text('{{ instruction }} (each: {{ 10 // parts }}){% if note %} {{ note }}{% endif %}')
    data = tmp_path / "seeds.jsonl"
    data.write_text("\n".join([
        '{"id": "ok", "instruction": "Name a colour.", "parts": 2, "note": null, "gold": 3}',
        '{"id": "null", "instruction": null, "parts": 2, "note": null, "gold": "x"}',
        '{"id": "blank", "instruction": "  ", "parts": 2, "note": "", "gold": 4.5}',
        '{"id": "broken", "instruction": "Name a fruit.", "parts": 0, "note": "n", "gold": "y"}',
        '{"id": "lacks", "instruction": "Name a tree.", "note": null, "gold": true}',
    ]) + "\n")
    out = tmp_path / "run"
    with running_server(log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        _run(_data_pipeline(tmp_path, data, server.base_url, template="ask.jinja2", prompts=prompts), out)
        assert len(server.log_entries()) == 1
    assert [(r["id"], r["gold"]) for r in read_rows(out, "answers")] == [("ok", "3")]
    failed = {r["id"]: r for r in read_rows(out, "answers", failed=True)}
    assert {k: r["reason"] for k, r in failed.items()} == {
        "null": "empty_input", "blank": "empty_input", "broken": "template_error", "lacks": "missing_column:parts"}
    assert "instruction" in failed["null"]["detail"] and "ZeroDivisionError" in failed["broken"]["detail"]
    assert len(load_from_disk(str(out / "datasets" / "seeds"))) == 5


@pytest.mark.parametrize("column, fragment", [("id", "an input column"), ("instruction", "an input column"),
                                              ("reasoning", "a column this stage writes itself")])
def test_output_column_overwriting_a_column(tmp_path: Path, column: str, fragment: str) -> None:
    from tests.conftest import seeds_file

    path = _data_pipeline(tmp_path, seeds_file(tmp_path, 3), output_column=column)
    _expect_error(run_cli("validate", str(path)), "stages.1.output_column", f"output_column {column!r} of stage 'answers'", fragment)


def test_load_of_a_saved_dataset_follows_its_contents(tmp_path: Path) -> None:
    """Defect 8: the same `datasets` directory saved again with new rows: the load stage and what
    follows run again and see the new rows (the path alone was the fingerprint)."""
    from datasets import Dataset

    from tests.conftest import read_rows
    from tests.fakeserver import running_server

    saved = tmp_path / "saved"
    Dataset.from_list([{"instruction": "Name a colour."}, {"instruction": "Name a fruit."}]).save_to_disk(str(saved))
    out = tmp_path / "run"
    with running_server() as server:
        pipeline = _data_pipeline(tmp_path, saved, server.base_url)
        _run(pipeline, out)
        first = read_rows(out, "answers")
        Dataset.from_list([{"instruction": "Name a tree."}, {"instruction": "Name a fruit."}]).save_to_disk(str(saved) + ".new")
        import shutil

        shutil.rmtree(saved)
        (tmp_path / "saved.new").rename(saved)
        _run(pipeline, out)
    assert [r["instruction"] for r in first] == ["Name a colour.", "Name a fruit."]
    assert [r["instruction"] for r in read_rows(out, "seeds")] == ["Name a tree.", "Name a fruit."]
    assert [r["instruction"] for r in read_rows(out, "answers")] == ["Name a tree.", "Name a fruit."]


# ---- read-only commands ---------------------------------------------------------------------
@pytest.mark.parametrize("content, fragment", [("[]", "not a run record"), ('{"status": "running", "sta', "cannot be read"),
                                               ("\xff", "cannot be read"), ("3", "not a run record")])
def test_status_on_a_damaged_run_json(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "run.json").write_bytes(content.encode("latin-1"))
    _expect_error(run_cli("status", str(tmp_path)), "run.json", fragment)


def test_status_on_odd_values_still_prints(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text('{"pipeline": "p", "status": "done", "spent_usd_total": "x", "stages": [1]}')
    proc = run_cli("status", str(tmp_path))
    assert proc.returncode == 0 and "p: done" in proc.stdout, proc.stderr


@pytest.mark.parametrize("name", ["..", ".", "../x", "/etc"])
def test_show_refuses_a_name_outside_the_run(tmp_path: Path, name: str) -> None:
    run = tmp_path / "run"
    (run / "datasets" / "seeds").mkdir(parents=True)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "data.jsonl").write_text('{"secret": 1}\n')
    (run / "data.jsonl").write_text('{"secret": 2}\n')
    proc = run_cli("show", str(run), name)
    _expect_error(proc, name)
    assert "secret" not in proc.stdout


@pytest.mark.parametrize("out", ["/proc/synthkd-run", "{tmp}/file/run"])
def test_out_that_cannot_be_created(tmp_path: Path, out: str) -> None:
    """/proc refuses new directories even to root (a read-only directory does not stop root)."""
    (tmp_path / "file").write_text("")
    from tests.conftest import seeds_file

    proc = run_cli("run", str(_data_pipeline(tmp_path, seeds_file(tmp_path, 2))), "--out", out.format(tmp=tmp_path))
    _expect_error(proc, "--out")


# ---- serve.command --------------------------------------------------------------------------
def _served_pipeline(tmp: Path, command: list[str]) -> Path:
    from tests.conftest import seeds_file

    path = _data_pipeline(tmp, seeds_file(tmp, 2))
    doc = yaml.safe_load(path.read_text())
    doc["endpoints"]["teacher"] = {"base_url": None, "model": "teacher", "serve": {"model_path": "echo-model", "command": command}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("command, fragments", [
    (["no-such-server-xyz", "--port", "{port}"], ["endpoints.teacher.serve.command", "'no-such-server-xyz' is not found"]),
    (["python3", "--port", "{prot}"], ["endpoints.teacher.serve.command", "unknown placeholder(s) {prot}"]),
])
def test_bad_serve_command_caught_at_validate(tmp_path: Path, command: list[str], fragments: list[str]) -> None:
    _expect_error(run_cli("validate", str(_served_pipeline(tmp_path, command))), *fragments)


def test_serve_command_keeps_other_braces() -> None:
    from synthkd.config.endpoints import ServeConfig
    from synthkd.serve.process import server_command

    serve = ServeConfig(model_path="m", command=["srv", "--port={port}", "--model", "{model}", "--override", '{"a": 1}', "{{x}}"])
    assert server_command(serve, "/w", ["teacher"], "127.0.0.1", 8000, {}) == [
        "srv", "--port=8000", "--model", "/w", "--override", '{"a": 1}', "{{x}}"]


# ---- ?layers= deeper than the model ---------------------------------------------------------
@pytest.mark.parametrize("model, fragment", [
    ("tiny:teacher?layers=9", "cannot keep 9 layers of a 4-layer model"),
    ("{local}?layers=0,7", "layer 7 does not exist in a 4-layer model"),
    ("smollm2-135m-instruct?layers=31", "cannot keep 31 layers of a 30-layer model"),
])
def test_layers_beyond_the_model_depth_caught_at_validate(tmp_path: Path, model: str, fragment: str) -> None:
    if model.startswith("smollm2"):
        from synthkd.models.packaged import PACKAGED, packaged_gguf

        try:
            packaged_gguf("smollm2-135m-instruct")
        except ConfigError:
            pytest.skip(f"needs {PACKAGED['smollm2-135m-instruct'].install}")
    local = tmp_path / "local"
    local.mkdir()
    (local / "config.json").write_text('{"num_hidden_layers": 4}')
    path = _served_pipeline(tmp_path, ["python3", "--port", "{port}"])
    doc = yaml.safe_load(path.read_text())
    doc["endpoints"]["teacher"]["serve"]["model_path"] = model.format(local=local)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    _expect_error(run_cli("validate", str(path)), "endpoints.teacher.serve.model_path", fragment)


def test_rationale_null_question_is_a_failed_row(tmp_path: Path) -> None:
    from tests.conftest import read_rows
    from tests.fakeserver import running_server

    data = tmp_path / "q.jsonl"
    data.write_text('{"id": "ok", "question": "What is 2+2?"}\n{"id": "null", "question": null}\n{"id": "blank", "question": ""}\n')
    doc = {"name": "r", "prompts_dir": str(REPO / "prompts"), "endpoints": {"teacher": {"base_url": "", "model": "teacher", "timeout_s": 5}},
           "stages": [{"name": "q", "type": "load", "path": str(data)},
                      {"name": "rationales", "type": "rationale", "input": "q", "gold_column": None, "samples": 1,
                       "sampling": {"max_tokens": 32, "seed": 1}}]}
    out = tmp_path / "run"
    with running_server(log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        doc["endpoints"]["teacher"]["base_url"] = server.base_url
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(doc))
        _run(tmp_path / "r.yaml", out)
        assert len(server.log_entries()) == 1
    reasons = {r["id"]: r["reason"] for r in read_rows(out, "rationales", failed=True)}
    assert reasons.get("null") == "empty_input" and reasons.get("blank") == "empty_input"


def test_lion_seeds_without_an_instruction_are_failed_rows_never_sent(tmp_path: Path) -> None:
    """Lion sends its seeds' `instruction` as it is: a null or blank one would be a paid request about nothing."""
    from tests.conftest import lion_pipeline, read_rows, run_cli
    from tests.fakeserver import running_server

    with running_server() as server:
        pipeline = lion_pipeline(tmp_path, server.base_url, n_seeds=6, iterations=1)
        seeds = tmp_path / "seeds.jsonl"
        seeds.write_text(seeds.read_text() + '{"id": "null", "instruction": null}\n{"id": "blank", "instruction": "  "}\n')
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    failed = {row["id"]: row["reason"] for row in read_rows(out, "lion", failed=True)}
    assert failed.get("null") == "empty_input" and failed.get("blank") == "empty_input"
    # Neither entered the loop: no pool, answer or discrimination row names them.
    judged = read_rows(out, "lion.iter1.discrimination") + read_rows(out, "lion.iter1.discrimination", failed=True)
    assert judged and not {"null", "blank"} & {row["id"] for row in judged}


def test_eval_questions_that_are_null_or_blank_are_failed_rows_never_sent(tmp_path: Path) -> None:
    """The eval stage sends each question as it is: a null or blank one is a failed row, not a scored 0."""
    import yaml

    from tests.conftest import REPO, read_rows, remote_endpoint, run_cli, run_json
    from tests.fakeserver import running_server

    test = (REPO / "data" / "rationale" / "arithmetic_test.jsonl").read_text().splitlines()[:3]
    (tmp_path / "test.jsonl").write_text("\n".join(test) + '\n{"id": "null", "question": null, "answer": "1"}\n'
                                         '{"id": "blank", "question": "", "answer": "2"}\n')
    spec = {"name": "ev", "prompts_dir": str(REPO / "prompts"),
            "endpoints": {n: remote_endpoint("URL", n) for n in ("teacher", "judge", "student")},
            "stages": [{"name": "testset", "type": "load", "path": str(tmp_path / "test.jsonl")},
                       {"name": "eval", "type": "eval", "input": "testset", "question_column": "question", "gold_column": "answer"}]}
    with running_server() as server:
        for endpoint in spec["endpoints"].values():
            endpoint["base_url"] = server.base_url
        (tmp_path / "ev.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        proc = run_cli("run", str(tmp_path / "ev.yaml"), "--out", str(tmp_path / "run"))
        assert proc.returncode == 0, proc.stderr
        sent = server.stats().get("chat_requests", 0)
    failed = {row["id"]: row["reason"] for row in read_rows(tmp_path / "run", "eval", failed=True)}
    assert failed == {"null": "empty_input", "blank": "empty_input"}
    assert run_json(tmp_path / "run")["stages"]["eval"]["eval"]["n"] == 3
    assert sent == 3 * 4  # the three real questions only: student, teacher and the judge in both orders
