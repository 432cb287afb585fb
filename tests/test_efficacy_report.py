"""The `synthkd efficacy` report (issue 20): markdown and self-contained HTML from efficacy.json, and the choice of
side-by-side examples."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from synthkd.efficacy.report import markdown, pick_examples, write_html
from synthkd.efficacy.stats import NO_DIFFERENCE, PAYS_OFF
from synthkd.items import Item

EVIL = "<script>alert('x')</script>"


def _summary(mean: float, half: float, n: int = 40) -> dict[str, Any]:
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def _gain(mean: float, low: float, high: float, verdict: str, p_holm: float) -> dict[str, Any]:
    return {"mean": mean, "ci_low": low, "ci_high": high, "p_value": p_holm / 2, "p_holm": p_holm,
            "verdict": verdict, "detectable": 0.12}


def _result() -> dict[str, Any]:
    """Three arms (KD baseline, Lion that hacks the teacher on the gold set, a skipped DPO arm); a set with gold
    and one without."""
    spend = {"cap_usd": 0.0061, "calls": 160, "input_tokens": 9000, "output_tokens": 6000,
             "untrained_calls": 0, "untrained_usd": 0.0}
    kd = {"label": "plain KD, greedy targets", "description": "SFT on the teacher's greedy answers", "status": "done",
          "reason": None, "baseline": None, "seeds": [0, 1], "spend": {**spend, "cost_usd": 0.0058},
          "training": {"examples": 160, "steps": 48, "wall_s": 95.2},
          "sets": {"in_dist": {"metrics": {"gold_accuracy": _summary(0.40, 0.08), "rouge_l": _summary(31.0, 3.0),
                                           "nll": _summary(1.9, 0.1)}, "per_family": {}, "teacher_hacking": False},
                   "unseen_families": {"metrics": {"rouge_l": _summary(22.0, 2.5), "nll": _summary(2.4, 0.2)},
                                       "per_family": {}, "teacher_hacking": False}}}
    lion = {"label": "Lion", "description": "adversarial generation", "status": "done", "reason": None,
            "baseline": "kd_greedy", "seeds": [0],
            "spend": {**spend, "cost_usd": 0.00604, "calls": 140, "untrained_calls": 12, "untrained_usd": 0.0004},
            "training": {"examples": 131, "steps": 48, "wall_s": 101.0},
            "sets": {"in_dist": {"metrics": {"gold_accuracy": _summary(0.33, 0.08), "rouge_l": _summary(36.0, 3.0),
                                             "nll": _summary(1.7, 0.1)},
                                 "vs_baseline": {"gold_accuracy": _gain(-0.07, -0.15, 0.01, NO_DIFFERENCE, 0.21),
                                                 "rouge_l": _gain(5.0, 1.0, 9.0, PAYS_OFF, 0.01)},
                                 "per_family": {}, "teacher_hacking": True},
                     "unseen_families": {"metrics": {"rouge_l": _summary(27.0, 2.5), "nll": _summary(2.2, 0.2)},
                                         "vs_baseline": {"rouge_l": _gain(5.0, 1.5, 8.5, PAYS_OFF, 0.004)},
                                         "per_family": {}, "teacher_hacking": False}}}
    dpo = {"label": "student DPO", "description": "DPO from the KD checkpoint", "status": "skipped",
           "reason": "judge sanity probe failed: inconsistent in swapped order", "baseline": "kd_greedy"}
    reference = {"cost_usd": 0.0012, "sets": {
        "in_dist": {"n": 40, "gold_n": 40, "teacher": {"gold_accuracy": _summary(0.85, 0.05), "rouge_l": _summary(100.0, 0.0)},
                    "floor": {"gold_accuracy": _summary(0.12, 0.05), "rouge_l": _summary(15.0, 2.0), "nll": _summary(3.1, 0.2)}},
        "unseen_families": {"n": 30, "gold_n": 0, "teacher": {"rouge_l": _summary(100.0, 0.0)},
                            "floor": {"rouge_l": _summary(10.0, 2.0), "nll": _summary(3.5, 0.2)}}}}
    return {
        "version": 1, "command": "synthkd efficacy pipelines/efficacy.yaml --heldout unseen_families.jsonl",
        "tier": "quick", "budget_usd": 0.0061, "steps": 48, "extra_steps": 16, "batch": 8, "wall_s": 2400.5,
        "teacher": {"endpoint": "teacher", "model": "smollm2-135m-instruct", "input_per_million": 0.15,
                    "output_per_million": 0.6, "nominal_price": True},
        "student": {"model": "smollm2-135m-instruct?layers=10"},
        "probes": {"generator_yield": {"status": "ok", "summary": "14 of 20 generation calls gave a new instruction",
                                       "yield": 0.7},
                   "judge_sanity": {"status": "failed", "summary": "judge picks the first answer in both orders"}},
        "reference": reference, "arms": {"kd_greedy": kd, "lion": lion, "dpo": dpo},
        "examples": {"in_dist": [{"id": "q1", "instruction": "Antonym of hot?", "gold": "cold", "teacher": "Cold.",
                                  "answers": {"kd_greedy": "Cold.", "lion": EVIL}}],
                     "unseen_families": []},
        "conclusion": ["Lion raises ROUGE-L but lowers gold accuracy: it imitates the teacher's wording, not its answers."],
    }


def test_markdown_shows_every_arm_set_interval_and_verdict() -> None:
    md = markdown(_result())
    assert "smollm2-135m-instruct?layers=10" in md and "tier quick" in md and "$0.0061 per arm" in md
    assert "48 optimizer steps" in md
    for text in ("Held-out set: in_dist", "Held-out set: unseen_families", "plain KD, greedy targets", "Lion",
                 "student DPO", "untrained student (floor)", "teacher (ceiling)"):
        assert text in md
    assert "skipped: judge sanity probe failed: inconsistent in swapped order" in md
    assert "40.0% [32.0, 48.0]" in md  # gold accuracy with its interval, in percent
    assert "-7.0 pts [-15.0, +1.0]" in md  # the gold set's gain is judged on gold, not the rising proxy
    assert "+5.0 [+1.5, +8.5]" in md  # the set without gold is judged on ROUGE-L
    assert f"{NO_DIFFERENCE} (smallest detectable: 12.0 pts) vs plain KD, greedy targets" in md
    assert PAYS_OFF in md and "0.004" in md  # Holm p
    hacking_rows = [line for line in md.splitlines() if "TEACHER HACKING" in line]
    assert len(hacking_rows) == 1 and hacking_rows[0].startswith("| Lion |")
    # spend: dollars to 4 significant digits against the cap, untrained paid calls, examples, steps, minutes
    lion_spend = next(line for line in md.splitlines() if line.startswith("| Lion |") and "of $0.0061" in line)
    assert "$0.00604 of $0.0061" in lion_spend and "12 ($0.0004)" in lion_spend and "| 131 |" in lion_spend
    assert "| 1.7 |" in lion_spend  # 101 s of student training
    assert "judge_sanity: failed — judge picks the first answer in both orders" in md
    assert "## What to conclude" in md and "imitates the teacher's wording" in md


def test_html_is_self_contained_with_plots_and_escaped_answers(tmp_path: Path) -> None:
    out = tmp_path / "efficacy.html"
    write_html(_result(), out)
    assert [p.name for p in tmp_path.iterdir()] == ["efficacy.html"]  # one file, nothing beside it
    page = out.read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    # gain against dollars for each of the 2 sets, and gold against proxy for the set with gold
    assert len(images) == 3
    assert not re.search(r'<img src="(?!data:)', page)  # no image loaded from elsewhere
    assert EVIL not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Side-by-side examples" in page and "Antonym of hot?" in page and "Cold." in page
    assert "skipped: judge sanity probe failed" in page and "TEACHER HACKING" in page
    assert "Teacher hacking (proxy up, gold down vs the baseline; red arrow): Lion (in_dist)" in page


@pytest.mark.parametrize("result", [
    {"version": 1, "arms": {}},
    {"version": 1, "arms": {"x": {"status": "skipped", "reason": "no GPU"}}, "probes": {"p": {}}, "examples": {}},
    {"version": 1, "arms": {"x": {"status": "done", "sets": {"s": {"metrics": {"rouge_l": {"mean": 3}}}}}, "y": "junk"},
     "reference": {"sets": {"s": None}}, "examples": {"s": [{"answers": None}, "junk"]}, "conclusion": None},
], ids=["minimal", "skipped-only", "partial"])
def test_partial_results_render(tmp_path: Path, result: dict[str, Any]) -> None:
    md = markdown(result)
    assert "## What to conclude" in md
    write_html(result, tmp_path / "r.html")
    assert "</html>" in (tmp_path / "r.html").read_text(encoding="utf-8")
    if result["arms"].get("x", {}).get("reason"):
        assert "skipped: no GPU" in md


def test_pick_examples_puts_disagreement_first() -> None:
    items = [Item("a", "Plural of cat?", "cats"), Item("b", "Capital of France?", "Paris"), Item("c", "Say hello.")]
    teacher = {"a": "The plural is cats.", "b": "The capital of France is Paris.", "c": "Hello there, friend."}
    rows = {"kd": {"a": "The plural is cats.", "b": "The capital of France is Paris.", "c": "Hello there, friend."},
            "lion": {"a": "The plural is cats.", "b": "The capital of France is Lyon.", "c": "Hello there."}}
    picked = [r.model_dump() for r in pick_examples(rows, teacher, items, k=2)]
    assert [r["id"] for r in picked] == ["b", "c"]  # gold split first, then the ROUGE-L spread; "a" all agree
    assert picked[0] == {"id": "b", "instruction": "Capital of France?", "gold": "Paris",
                         "teacher": "The capital of France is Paris.",
                         "answers": {"kd": "The capital of France is Paris.", "lion": "The capital of France is Lyon."}}
    assert picked[1]["gold"] is None
    # all alike: ties go by id, deterministically
    same = {"kd": {"a": "x", "b": "x"}, "lion": {"a": "x", "b": "x"}}
    assert [r.id for r in pick_examples(same, {}, list(reversed(items[:2])))] == ["a", "b"]
