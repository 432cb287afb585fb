"""Montessori pair construction on crafted influence scores (exact pairs), and the filters."""

import pytest

from synthkd.montessori.pairs import Candidate, PromptGroup, build_pairs, distribution, filter_reason, utility_from_influence


def test_pairs_from_crafted_influence() -> None:
    influence = {"a": -0.30, "b": -0.10, "c": 0.05, "d": 0.20, "e": 0.0}
    group = PromptGroup("p1", [{"role": "user", "content": "write a task"}],
                        [Candidate(k, "p1", f"task {k}", f"T{k}", utility=utility_from_influence(v)) for k, v in influence.items()])
    pairs = build_pairs([group], max_per_prompt=3)
    # Chosen by helpfulness (a, then b); rejected by harm (d, then c); e (zero) is neither.
    assert [p.id for p in pairs] == ["p1:a>d", "p1:a>c", "p1:b>d"]
    assert pairs[0].chosen == [{"role": "assistant", "content": "Ta"}]
    assert pairs[0].rejected == [{"role": "assistant", "content": "Td"}]
    assert pairs[0].prompt == [{"role": "user", "content": "write a task"}]
    assert abs(pairs[0].utility_gap - 0.5) < 1e-12
    assert len(build_pairs([group], max_per_prompt=10)) == 4


def test_prompt_with_one_side_only_is_skipped() -> None:
    only_good = PromptGroup("p2", [], [Candidate("x", "p2", "x", "x", utility=0.1), Candidate("y", "p2", "y", "y", utility=0.2)])
    assert build_pairs([only_good], max_per_prompt=4) == []


def test_filters_and_distribution() -> None:
    assert filter_reason("Describe the water cycle in detail.", 4, 20, ["image"]) is None
    assert filter_reason("Too short", 4, 20, []) == "too_short"
    assert filter_reason(" ".join(["word"] * 30), 4, 20, []) == "too_long"
    assert filter_reason("Draw an image of a cat please", 4, 20, ["image"]) == "banned_word"
    assert filter_reason("Describe imagery in poetry today", 4, 20, ["image"]) is None  # whole words only
    d = distribution([0.2, -0.1, -0.3, 0.0])
    assert (d.count, d.min, d.max, d.negative, d.positive) == (4, -0.3, 0.2, 2, 1)


def test_hosted_teacher_is_a_validate_time_error() -> None:
    from tests.conftest import REPO, run_cli

    proc = run_cli("validate", str(REPO / "pipelines" / "montessori.yaml"), "--set", "endpoints.teacher.base_url=https://api.example.com/v1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "hosted API whose weights synthkd cannot train" in proc.stderr and "stages.2.teacher" in proc.stderr
    proc = run_cli("validate", str(REPO / "pipelines" / "montessori.yaml"), "--set", "stages.montessori.signal=icl_accuracy")
    assert proc.returncode == 2 and "signal icl_accuracy needs a probe set" in proc.stderr
    # First-order options with exact influence are a mistake the user should hear about.
    proc = run_cli("validate", str(REPO / "pipelines" / "montessori.yaml"), "--set", "stages.montessori.influence_params=lora")
    assert proc.returncode == 2 and "influence_params only applies to influence: first_order" in proc.stderr
    assert "stages.2.influence_params" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.needs_trl  # validating the stage's `dpo:`/`sft:` blocks needs TRL
def test_first_order_options_validate() -> None:
    from tests.conftest import REPO, run_cli

    proc = run_cli("validate", str(REPO / "pipelines" / "montessori.yaml"), "--set", "stages.montessori.influence=first_order",
                   "--set", "stages.montessori.influence_params=last_layers", "--set", "stages.montessori.influence_projection_dim=256")
    assert proc.returncode == 0, proc.stderr
