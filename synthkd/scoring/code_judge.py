"""Judges that are code, usable wherever an LLM judge compares a teacher's and a student's answer.

A small teacher judges at chance, so on small machines the referee (Lion), the pair judge (DPO)
and the eval judge can be one of these instead of an endpoint. They return the same Judgement as
the LLM judge (teacher score a, student score b, on a 0-10 scale), so Lion's rule "hard when
teacher - student >= tau" keeps its meaning:

* `code:rouge_l`: the teacher's answer is the reference, so the teacher scores 10 and the student
  ROUGE-L F1 / 10. Hard when ROUGE-L < 100 - 10 tau (tau 5: below 50).
* `code:exact_match`: on rows with gold, 10 for a correct answer and 0 for a wrong one (hard when
  the teacher is right and the student wrong, for any 0 < tau <= 10); rows without gold fall back
  to ROUGE-L against the teacher.
"""

from __future__ import annotations

from synthkd.judging import Judgement
from synthkd.scoring.metrics import gold_match, rouge_l_f1

PREFIX = "code:"
CODE_JUDGES = {"rouge_l": "ROUGE-L F1 of the student's answer against the teacher's",
               "exact_match": "gold match where the row has gold, else ROUGE-L against the teacher"}


def is_code_judge(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)  # type: ignore[union-attr]


def code_judge_kind(name: str) -> str:
    return name[len(PREFIX):]


def code_judgement(name: str, teacher: str, student: str, gold: str | None = None) -> Judgement:
    """Teacher (a) and student (b) scores, 0-10, from a code judge."""
    kind = code_judge_kind(name)
    if kind == "exact_match" and gold is not None and str(gold).strip():
        t = 10.0 if gold_match(teacher, str(gold)) else 0.0
        s = 10.0 if gold_match(student, str(gold)) else 0.0
    elif kind in CODE_JUDGES:
        t, s = 10.0, rouge_l_f1(student, teacher) / 10.0
    else:
        raise ValueError(f"unknown code judge {name!r}")
    return Judgement(a=t, b=s, raw=(0, 0, 0, 0))
