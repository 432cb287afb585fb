"""ROUGE-L (token LCS F-measure) near-duplicate search over a growing pool of texts.

Lion and Self-Instruct drop a new instruction whose ROUGE-L against any pooled instruction is
above a threshold (0.7). Comparing each of N candidates with every pooled text is O(N * P * L^2)
and too slow at N=6000 against tens of thousands; this index finds, exactly, whether any pooled
text is above the threshold by prefix filtering on the multiset of tokens:

* F = 2 * LCS / (m + n), and LCS <= |x & y| (multiset overlap), so F > t needs overlap > t(m+n)/2;
* F <= 2 min(m,n) / (m+n), so lengths must be within a ratio of t / (2 - t);
* together, an item of length n can only match with overlap >= k(n) = floor(t n / (2 - t)) + 1, and
  two multisets sharing k tokens share a token among each one's first len - k + 1 tokens under any
  fixed global order (rarest first keeps the candidate lists short).
Candidates that pass are verified with an exact LCS.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Iterable

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric tokens (the tokenisation of the rouge_score package, without stemming)."""
    return [t for t in _NON_ALNUM.split(text.lower()) if t]


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)))."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: str | list[str], b: str | list[str]) -> float:
    """ROUGE-L F-measure between two texts (or token lists)."""
    ta = tokenize(a) if isinstance(a, str) else a
    tb = tokenize(b) if isinstance(b, str) else b
    if not ta or not tb:
        return 0.0
    return 2.0 * lcs_length(ta, tb) / (len(ta) + len(tb))


class RougeIndex:
    """Pool of texts answering `too_similar(text)`: is any pooled text's ROUGE-L above threshold?"""

    def __init__(self, threshold: float, initial: Iterable[str] = ()) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self._tokens: list[list[str]] = []
        self._postings: dict[str, list[int]] = defaultdict(list)
        initial = list(initial)
        # The global order is fixed here, once: rare tokens (in the initial pool) come first.
        self._freq = Counter(tok for text in initial for tok in set(_tagged(tokenize(text))))
        for text in initial:
            self.add(text)

    def __len__(self) -> int:
        return len(self._tokens)

    def _min_overlap(self, n: int) -> int:
        t = self.threshold
        return math.floor(t * n / (2 - t)) + 1

    def _prefix(self, tokens: list[str]) -> list[str]:
        tagged = sorted(_tagged(tokens), key=lambda tok: (self._freq.get(tok, 0), tok))
        return tagged[: max(len(tagged) - self._min_overlap(len(tagged)) + 1, 1)]

    def add(self, text: str) -> None:
        tokens = tokenize(text)
        index = len(self._tokens)
        self._tokens.append(tokens)
        if tokens:
            for tok in self._prefix(tokens):
                self._postings[tok].append(index)

    def best_match(self, text: str) -> tuple[float, int | None]:
        """(highest ROUGE-L above the threshold, its pool index), or (0.0, None) if none is above."""
        tokens = tokenize(text)
        if not tokens:
            return 0.0, None
        m = len(tokens)
        ratio = self.threshold / (2 - self.threshold)
        seen: set[int] = set()
        best, where = 0.0, None
        for tok in self._prefix(tokens):
            for j in self._postings.get(tok, ()):
                if j in seen:
                    continue
                seen.add(j)
                other = self._tokens[j]
                n = len(other)
                if min(m, n) < ratio * max(m, n):
                    continue
                score = 2.0 * lcs_length(tokens, other) / (m + n)
                if score > self.threshold and score > best:
                    best, where = score, j
        return best, where

    def too_similar(self, text: str) -> bool:
        return self.best_match(text)[1] is not None


def _tagged(tokens: list[str]) -> list[str]:
    """Make a multiset a set: the k-th occurrence of a token becomes 'token#k'."""
    counts: Counter[str] = Counter()
    out = []
    for tok in tokens:
        counts[tok] += 1
        out.append(f"{tok}#{counts[tok]}")
    return out
