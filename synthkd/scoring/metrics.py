"""Pure metrics of an answer against a reference or a gold answer, and bootstrap intervals.

ROUGE-L follows the protocol of MiniLLM and DistiLLM: `rouge_score`'s RougeScorer(["rougeL"],
use_stemmer=True), F1 x 100, the student's answer against the teacher's.
"""

from __future__ import annotations

import random
import re
import statistics
from functools import lru_cache
from typing import Collection, Sequence

from synthkd.answers import answers_match, extract_final_answer, normalize_answer

_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")


@lru_cache(maxsize=1)
def _scorer():  # type: ignore[no-untyped-def]
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 x 100 of `prediction` against `reference` (0 when either is empty)."""
    if not prediction.strip() or not reference.strip():
        return 0.0
    return 100.0 * _scorer().score(reference, prediction)["rougeL"].fmeasure


def first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0] if text.strip() else ""


def gold_match(answer: str, gold: str, rivals: Collection[str] = ()) -> bool:
    """Whether a free-form answer gives the gold short answer.

    True when the extracted final answer ("the answer is X", a number, ...) or the whole answer
    normalises to the gold answer, or when the gold answer appears as whole words in the answer's
    first sentence ("The capital of France is Paris."). Short-answer families (antonyms, capitals,
    plurals, sentiment) are answered in a sentence by chat models, so exact match alone would score
    a correct teacher 0; the first-sentence rule keeps a later hedge from counting. `rivals` are the
    other answers of a closed label set (`label_rivals`): a first sentence naming one of them too
    ("a mix of both positive and negative") is a hedge, not the answer. A mention negated within its
    clause ("neutral, with no negative emotions", "not positive") names nothing: it neither gives the
    gold answer nor hedges.
    """
    if answers_match(extract_final_answer(answer), gold) or answers_match(answer, gold):
        return True
    g = normalize_answer(gold)
    if not g:
        return False
    sentence = _Sentence(first_sentence(answer))
    if not sentence.affirms(g):
        return False
    return not any(sentence.affirms(normalize_answer(r)) for r in rivals if normalize_answer(r) != g)


# Words that negate a mention up to three words after them in the same clause ("t": the end of isn't, doesn't).
_NEGATIONS = frozenset({"no", "not", "never", "without", "nor", "neither", "nothing", "none", "t"})
_NEGATION_REACH = 3


class _Sentence:
    """A sentence as lower-case words, each with the number of the clause (split at , ; :) it stands in."""

    def __init__(self, text: str) -> None:
        self.words: list[str] = []
        self.clauses: list[int] = []
        for n, clause in enumerate(re.split(r"[,;:]", text.lower())):
            found = re.findall(r"[a-z0-9]+", clause)
            self.words += found
            self.clauses += [n] * len(found)

    def affirms(self, answer: str) -> bool:
        """Whether `answer` occurs as whole words, at least once with no negation before it in its clause."""
        target = re.findall(r"[a-z0-9]+", answer)
        if not target:
            return False
        for i in range(len(self.words) - len(target) + 1):
            if self.words[i:i + len(target)] != target:
                continue
            before = range(max(0, i - _NEGATION_REACH), i)
            if not any(self.words[j] in _NEGATIONS and self.clauses[j] == self.clauses[i] for j in before):
                return True
        return False


def label_rivals(golds: Sequence[str | None], groups: Sequence[str | None] | None = None) -> list[tuple[str, ...]]:
    """For each item, the other answers of its closed label set, for `gold_match`.

    A closed label set is read off the items themselves: the gold answers that recur (on two items or more)
    within the item's group (its family where known, else the whole set), as `positive`/`negative` do in a
    sentiment family. An item whose gold occurs once (a capital, an antonym) has open answers and no rivals.
    """
    groups = list(groups) if groups is not None else [None] * len(golds)
    counts: dict[tuple[str | None, str], int] = {}
    for gold, group in zip(golds, groups):
        if gold is not None and normalize_answer(gold):
            key = (group, normalize_answer(gold))
            counts[key] = counts.get(key, 0) + 1
    labels: dict[str | None, list[str]] = {}
    for (group, label), n in counts.items():
        if n >= 2:
            labels.setdefault(group, []).append(label)
    out = []
    for gold, group in zip(golds, groups):
        own = normalize_answer(gold) if gold is not None else None
        pool = labels.get(group, [])
        out.append(tuple(sorted(x for x in pool if x != own)) if own in pool else ())
    return out


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over items (here: held-out prompts)."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return (lo, hi)


def summary(values: Sequence[float], seed: int = 0) -> dict[str, float | int]:
    """{"mean", "ci_low", "ci_high", "n"}: what run.json and the benchmark report per metric."""
    lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": mean(values), "ci_low": lo, "ci_high": hi, "n": len(values)}
