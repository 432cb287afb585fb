"""Judges that are code and judge-free metrics, as pure functions."""

import pytest

from synthkd.errors import ConfigError
from synthkd.models.prune import evenly_spaced
from synthkd.models.influence import most_influential
from synthkd.models.spec import ModelSpec, parse_model_spec
from synthkd.scoring.code_judge import code_judgement
from synthkd.items import Item
from synthkd.scoring.heldout import score_answers
from synthkd.scoring.metrics import bootstrap_ci, gold_match, rouge_l_f1


def test_rouge_l_follows_rouge_score_protocol() -> None:
    # LCS "the cat sat" (3 of 4 and 3 of 3 tokens): F1 = 2 * 0.75 * 1 / 1.75
    assert rouge_l_f1("the cat sat", "the cat sat down") == pytest.approx(100 * 2 * 0.75 / 1.75)
    assert rouge_l_f1("Cats are running", "cat is run") == pytest.approx(100 * 2 / 3)  # stemming: cats~cat, running~run
    assert rouge_l_f1("", "anything") == 0.0 and rouge_l_f1("same", "same") == 100.0


@pytest.mark.parametrize("answer,gold,ok", [
    ("The capital of France is Paris.", "Paris", True),
    ("Paris", "paris", True),
    ("The capital of France is Lyon. Some say Paris.", "Paris", False),  # only the first sentence counts
    ("Negative.", "negative", True),
    ("The plural of mouse is mice.", "mice", True),
    ("The plural of mouse is mouses.", "mice", False),
    ("The answer is 12.", "12", True),
    ("cold-blooded", "cold", True),
    ("", "cold", False),
])
def test_gold_match(answer: str, gold: str, ok: bool) -> None:
    assert gold_match(answer, gold) is ok


def test_code_judges_keep_lion_rule() -> None:
    j = code_judgement("code:rouge_l", "the capital is paris", "the capital is paris")
    assert (j.a, j.b, j.gap) == (10.0, 10.0, 0.0)
    j = code_judgement("code:rouge_l", "the capital is paris", "bananas")
    assert j.gap == 10.0
    # exact_match with gold: 10 or 0 each; without gold it falls back to ROUGE-L against the teacher
    assert code_judgement("code:exact_match", "It is Paris.", "It is Rome.", gold="Paris").gap == 10.0
    assert code_judgement("code:exact_match", "It is Rome.", "It is Paris.", gold="Paris").gap == -10.0
    assert code_judgement("code:exact_match", "a b c d", "a b", gold=None).b == pytest.approx(rouge_l_f1("a b", "a b c d") / 10)
    with pytest.raises(ValueError):
        code_judgement("code:nope", "a", "b")


def test_score_answers_and_intervals() -> None:
    items = [Item("1", "q1", gold="paris"), Item("2", "q2"), Item("3", "q3", gold="cold")]
    rows, out = score_answers(items, {"1": "Paris.", "2": "x y", "3": "hot"}, {"1": "Paris.", "2": "x y z", "3": "cold"})
    assert out.n == 3 and out.gold_accuracy is not None and out.gold_accuracy.mean == 0.5 and out.gold_accuracy.n == 2
    assert rows[0].rouge_l == 100.0 and rows[2].gold_correct is False and rows[1].gold_correct is None
    lo, hi = bootstrap_ci([0.0] * 50 + [1.0] * 50)
    assert 0.35 < lo < 0.5 < hi < 0.65
    assert bootstrap_ci([3.0] * 10) == (3.0, 3.0)


def test_model_specs_and_layer_choice() -> None:
    assert parse_model_spec("smollm2-135m-instruct").layers is None
    assert parse_model_spec("smollm2-135m-instruct?layers=10").layers == 10
    assert parse_model_spec("dir/model?layers=0,5,9").layers == (0, 5, 9)
    assert parse_model_spec("m?layers=20&by=influence") == ModelSpec("m", 20, "influence")
    assert parse_model_spec("m?layers=20").by == "spacing"
    for bad in ("x?layers=0", "x?layers=3,1", "x?layers=a", "x?depth=3", "?layers=2", "x?layers=4&by=magic",
                "x?layers=0,2&by=influence", "x?layers=4&by=influence&by=spacing", "x?by=influence"):
        with pytest.raises(ConfigError):
            parse_model_spec(bad, where="serve.model_path")
    assert evenly_spaced(30, 10) == (0, 3, 6, 10, 13, 16, 19, 23, 26, 29)
    assert evenly_spaced(30, 2) == (0, 29) and evenly_spaced(5, 5) == (0, 1, 2, 3, 4) and evenly_spaced(30, 1) == (0,)
    # by influence: the K layers that turn their input most, in layer order; a tie keeps the earlier layer
    assert most_influential([0.9, 0.02, 0.05, 0.01, 0.3], 3) == (0, 2, 4)
    assert most_influential([0.5, 0.1, 0.1, 0.1, 0.7], 3) == (0, 1, 4)
    assert most_influential([0.2, 0.1], 2) == (0, 1)
    with pytest.raises(ValueError):
        most_influential([0.2, 0.1], 3)


def test_completion_only_examples_split_the_last_turn() -> None:
    from synthkd.train.sft import training_examples

    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    assert training_examples(rows, False) == [{"messages": rows[0]["messages"]}]
    assert training_examples(rows, True) == [{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]}]
    with pytest.raises(ValueError):
        training_examples([{"messages": [{"role": "user", "content": "q"}]}], True)


def test_empty_answers_score_zero_instead_of_vanishing() -> None:
    items = [Item("1", "q1", "paris"), Item("2", "q2")]
    rows, out = score_answers(items, {"1": "", "2": "x y"}, {"1": "Paris.", "2": "x y"})
    assert out.n == 2 and out.rouge_l is not None and out.rouge_l.mean == 50.0
    assert out.gold_accuracy is not None and out.gold_accuracy.mean == 0.0


def test_a_hedge_naming_another_label_of_a_closed_set_is_not_the_answer() -> None:
    from synthkd.scoring.metrics import gold_match, label_rivals

    golds = ["positive", "negative", "negative", "positive", "Paris", "Oslo", None]
    families = ["sentiment", "sentiment", "sentiment", "sentiment", "capital", "capital", "open"]
    rivals = label_rivals(golds, families)
    assert rivals == [("negative",), ("positive",), ("positive",), ("negative",), (), (), ()]
    # Without families, the recurring golds of the whole set are the closed set.
    assert label_rivals(golds)[:2] == [("negative",), ("positive",)] and label_rivals(golds)[4] == ()
    hedge = "This is a mix of both positive and negative. The positive part is the food."
    assert gold_match(hedge, "negative") and not gold_match(hedge, "negative", rivals[1])
    assert gold_match("The sentiment of this review is negative.", "negative", rivals[1])
    assert gold_match("negative", "negative", rivals[1])  # the bare label is the answer
    # Only the first sentence is read: a later mention of the other label is no hedge.
    assert gold_match("It is negative. Some would call it positive.", "negative", rivals[1])
    assert gold_match("The capital of France is Paris, not Oslo.", "Paris", rivals[4])  # open answers: no rivals


def test_a_negated_label_is_not_the_answer() -> None:
    from synthkd.scoring.metrics import gold_match

    rivals = ("positive",)
    # "no negative emotions" does not say negative (a student answer the demo's held-out set scored as right).
    assert not gold_match("The sentiment of this review is neutral, with no negative emotions expressed.", "negative", rivals)
    assert not gold_match("This review is neither positive nor negative.", "negative", rivals)
    assert not gold_match("It isn't negative at all.", "negative", rivals)
    # A negated rival is no hedge, and a negation in another clause does not reach the answer.
    assert gold_match("It is negative, not positive.", "negative", rivals)
    assert gold_match("Not at all: the review is negative.", "negative", rivals)
    assert gold_match("No, it is negative.", "negative", rivals)
    assert gold_match("The capital of the USA is Washington, D.C.", "Washington, D.C.")
    assert not gold_match("The capital of France is not Lyon.", "Lyon")
