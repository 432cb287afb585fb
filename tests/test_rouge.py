"""ROUGE-L: exact values, and the index agrees with a brute-force scan."""

import json
import random

from synthkd.rouge import RougeIndex, lcs_length, rouge_l, tokenize
from tests.conftest import REPO


def test_exact_values() -> None:
    assert tokenize("Hello, World! 42x") == ["hello", "world", "42x"]
    assert lcs_length("a b c d".split(), "a c d e".split()) == 3
    # LCS 3, lengths 4 and 4: F = 2*3/8
    assert rouge_l("a b c d", "a c d e") == 0.75
    assert rouge_l("", "anything") == 0.0
    assert rouge_l("same words here", "Same words, here!") == 1.0


def test_index_matches_brute_force() -> None:
    lines = (REPO / "data" / "lion" / "seed_instructions.jsonl").read_text().splitlines()
    pool = [json.loads(l)["instruction"] for l in lines[:200]]
    rng = random.Random(0)
    # Candidates: near-copies (words dropped or swapped) and unrelated seeds.
    candidates = []
    for text in rng.sample(pool, 60):
        words = text.split()
        k = rng.randrange(0, max(1, len(words) // 3))
        for _ in range(k):
            if len(words) > 3:
                words.pop(rng.randrange(len(words)))
        candidates.append(" ".join(words))
    candidates += [json.loads(l)["instruction"] for l in lines[200:260]]
    index = RougeIndex(0.7, pool)
    for text in candidates:
        brute = max(rouge_l(text, p) for p in pool)
        assert index.too_similar(text) == (brute > 0.7), text
        if brute > 0.7:
            assert abs(index.best_match(text)[0] - brute) < 1e-12


def test_added_items_are_found() -> None:
    index = RougeIndex(0.7, ["write a poem about the sea"])
    assert not index.too_similar("compute the derivative of x squared times sine x")
    index.add("compute the derivative of x squared times sine x")
    assert index.too_similar("compute the derivative of x squared times the sine of x")
