"""DPO pair mining on scripted judge results: exact pairs and margins."""

from synthkd.pairs import SampleGroup, ScoredAnswers, margin_summary, ranked_pairs, teacher_vs_student_pairs, win_tie_loss
from synthkd.judging import RefereeScores, judge


def test_teacher_vs_student_pairs_from_both_order_judgements() -> None:
    # Scripted referee replies: (teacher first), (student first).
    scripted = {
        "a": (RefereeScores(score_assistant_1=9, score_assistant_2=4), RefereeScores(score_assistant_1=5, score_assistant_2=8)),  # 8.5 vs 4.5
        "b": (RefereeScores(score_assistant_1=6, score_assistant_2=6), RefereeScores(score_assistant_1=7, score_assistant_2=6)),  # 6.0 vs 6.5
        "c": (RefereeScores(score_assistant_1=7, score_assistant_2=6), RefereeScores(score_assistant_1=6, score_assistant_2=8)),  # 7.5 vs 6.0
    }
    rows = []
    for pid, (tf, sf) in scripted.items():
        j = judge(tf, sf)
        rows.append(ScoredAnswers(id=pid, instruction=f"q{pid}", teacher_answer=f"T{pid}", student_answer=f"S{pid}",
                                  teacher_score=j.a, student_score=j.b))
    pairs = teacher_vs_student_pairs(rows, margin=1.5)
    assert [(p.id, p.margin) for p in pairs] == [("a:tvs", 4.0), ("c:tvs", 1.5)]
    assert pairs[0].prompt == [{"role": "user", "content": "qa"}]
    assert pairs[0].chosen == [{"role": "assistant", "content": "Ta"}]
    assert pairs[0].rejected == [{"role": "assistant", "content": "Sa"}]
    assert teacher_vs_student_pairs(rows, margin=5) == []


def test_ranked_pairs_best_vs_worst() -> None:
    groups = [
        SampleGroup("x", "qx", [("s0", 3), ("s1", 8), ("s2", 8), ("s3", 3)]),
        SampleGroup("y", "qy", [("t0", 5), ("t1", 6)]),
        SampleGroup("z", "qz", [("u0", 9)]),
    ]
    pairs = ranked_pairs(groups, margin=2)
    assert len(pairs) == 1
    p = pairs[0]
    # Earliest of the tied best (s1), latest of the tied worst (s3).
    assert (p.id, p.chosen[0]["content"], p.rejected[0]["content"], p.margin) == ("x:rank", "s1", "s3", 5)
    assert [q.id for q in ranked_pairs(groups, margin=1)] == ["x:rank", "y:rank"]


def test_summaries() -> None:
    assert margin_summary([]) == {"count": 0}
    s = margin_summary([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s["count"], s["min"], s["median"], s["max"], s["mean"], s["p25"], s["p75"]) == (5, 1.0, 3.0, 5.0, 3.0, 2.0, 4.0)
    assert win_tie_loss([1.0, 0.0, -0.5, 2.0]) == {"n": 4, "wins": 2, "ties": 1, "losses": 1, "win_rate": 0.5, "win_or_tie_rate": 0.75}
