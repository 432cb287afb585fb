"""Evaluation arithmetic on scripted judge replies, decontamination on crafted overlaps, rationale
rejection sampling and the student formats."""


import pytest

from synthkd.stages.decontaminate import DecontaminateStage
from synthkd.stages.rationale import RationaleStage
from synthkd.judging import RefereeScores, judge
from synthkd.prompts import PromptLibrary
from synthkd.stages.decontaminate import decontaminate
from synthkd.stages.evaluate import EvalRow, outcome, summarize
from synthkd.stages.rationale import select, student_examples
from tests.conftest import REPO


def _scored(student_first: tuple[int, int], teacher_first: tuple[int, int], **extra) -> EvalRow:
    # Call 1 shows the student first, call 2 the teacher first (as run_eval does).
    j = judge(RefereeScores(score_assistant_1=student_first[0], score_assistant_2=student_first[1]),
              RefereeScores(score_assistant_1=teacher_first[0], score_assistant_2=teacher_first[1]))
    return EvalRow(id="x", instruction="q", student_answer="s", teacher_answer="t", student_score=j.a, teacher_score=j.b,
                   outcome=outcome(j.a, j.b), **extra)


def test_eval_arithmetic_on_scripted_judgements() -> None:
    rows = [
        _scored((8, 6), (6, 8), student_exact_match=True, teacher_exact_match=True),    # student 8, teacher 6: win
        _scored((5, 5), (5, 5), student_exact_match=False, teacher_exact_match=True),   # 5 vs 5: tie
        _scored((3, 9), (10, 2), student_exact_match=False, teacher_exact_match=True),  # student 2.5, teacher 9.5: loss
        _scored((6, 7), (8, 5), student_exact_match=True, teacher_exact_match=False),   # student 5.5, teacher 7.5: loss
    ]
    s = summarize(rows)
    assert (s.n, s.wins, s.ties, s.losses) == (4, 1, 1, 2)
    # Share of the teacher's total score (Lion's "% of ChatGPT capability"): 21 / 28.
    assert s.student_share_of_teacher == pytest.approx(21 / 28)
    assert s.mean_student_score == pytest.approx(21 / 4) and s.mean_teacher_score == pytest.approx(7.0)
    assert s.exact_match == 0.5 and s.exact_match_n == 4 and s.teacher_exact_match == 0.75


def test_eval_without_gold_has_no_exact_match() -> None:
    s = summarize([_scored((7, 7), (7, 7))])
    assert s.exact_match is None and "exact_match" not in s.model_dump(exclude_none=True) and s.ties == 1


def test_decontamination_on_crafted_overlaps() -> None:
    cfg = DecontaminateStage(name="d", type="decontaminate", input="x", against="t", ngram=5)
    reference = [{"instruction": "A train leaves the station at noon travelling at sixty miles per hour."}]
    rows = [
        {"id": "1", "instruction": "Completely unrelated question about painting a fence blue."},
        # Shares "at sixty miles per hour" (5 tokens) after normalisation (case, punctuation).
        {"id": "2", "instruction": "How far does a car go AT SIXTY miles, per hour, in two hours?"},
        # Shares only 4 consecutive tokens: kept.
        {"id": "3", "instruction": "A bus leaves the station and stops."},
        {"id": "4", "instruction": "leaves the station at noon"},  # exactly 5 shared tokens
    ]
    kept, dropped, counts = decontaminate(cfg, rows, reference)
    assert [r["id"] for r in kept] == ["1", "3"]
    assert [(r.value("id"), r.detail) for r in dropped] == [("2", "at sixty miles per hour"), ("4", "leaves the station at noon")]
    assert counts == {"dropped": 2, "kept": 2, "ngram": 5, "reference_size": 1}


def test_rejection_sampling_counts() -> None:
    samples = [{"sample": 0, "answer": "12"}, {"sample": 1, "answer": "12.0"}, {"sample": 2, "answer": "13"}, {"sample": 3, "answer": "$12"}]
    kept, _ = select(samples, gold="12", self_consistency=True)
    assert [s["sample"] for s in kept] == [0, 1, 3]
    kept, _ = select(samples, gold="7", self_consistency=True)
    assert kept == []
    # Without gold, self-consistency keeps the majority answer's rationales ("12" three times).
    kept, answer = select(samples, gold=None, self_consistency=True)
    assert [s["sample"] for s in kept] == [0, 1, 3] and answer == "12"
    kept, _ = select(samples, gold=None, self_consistency=False)
    assert len(kept) == 4


def test_student_formats() -> None:
    prompts = PromptLibrary(REPO / "prompts")
    inline_prompt = prompts.get("rationale/inline_target.jinja2")
    inline = RationaleStage(name="r", type="rationale", input="x", format="inline")
    [(task, messages)] = student_examples(inline, inline_prompt, "What is 2+3?", "Add 2 and 3 to get 5.", "5")
    assert task == "inline"
    assert messages == [{"role": "user", "content": "What is 2+3?"},
                        {"role": "assistant", "content": "Add 2 and 3 to get 5.\nTherefore, the answer is 5."}]
    multi = RationaleStage(name="r", type="rationale", input="x", format="multitask")
    examples = student_examples(multi, inline_prompt, "What is 2+3?", "Add 2 and 3 to get 5.", "5")
    assert examples == [
        ("answer", [{"role": "user", "content": "[label] What is 2+3?"}, {"role": "assistant", "content": "5"}]),
        ("rationale", [{"role": "user", "content": "[rationale] What is 2+3?"}, {"role": "assistant", "content": "Add 2 and 3 to get 5."}]),
    ]
