"""Final-answer handling for rationale distillation: normalise, extract, compare, vote.

Everything here is a pure function of its arguments (standard library only), so it can be used when
filtering teacher rationales by correctness, scoring a student on held-out problems, and taking a
self-consistency majority vote over sampled rationales.

* :func:`normalize_answer` maps an answer string to a canonical form (numbers rendered plainly,
  multiple-choice letters reduced to one lowercase letter, other text lowercased).
* :func:`extract_final_answer` finds the final answer span in free-form model output.
* :func:`answers_match` compares a predicted answer with a gold one (numbers with a tolerance).
* :func:`majority` takes the most frequent normalised answer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

__all__ = ["normalize_answer", "extract_final_answer", "answers_match", "majority", "parse_number"]

#: Numbers are rendered with at most this many decimal places (round half even).
MAX_DECIMALS = 6
#: Two numeric answers match when they differ by at most this much.
NUMERIC_TOLERANCE = Decimal("1e-6")

# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------

_UNICODE_FIXES = str.maketrans({"\u2212": "-", "\u2013": "-", "\u00a0": " ", "\u202f": " ", "\u2009": " "})

# "the answer is", "the final answer is:", "answer:", "final answer:", "correct answer =", ...
_PREFIX_RE = re.compile(
    r"^(?:(?:so|thus|therefore|hence)\s*,?\s+)?"
    r"(?:(?:the\s+)?(?:final\s+|correct\s+)?answer\s+is\b\s*[:=]?|(?:final\s+|correct\s+)?answer\s*[:=])\s*"
)
_BOXED_RE = re.compile(r"^\\(?:boxed|fbox)\{(.*)\}$")
_FRAC_TEX_RE = re.compile(r"\\[dt]?frac\{\s*([^{}]+?)\s*\}\{\s*([^{}]+?)\s*\}")
_PAIRS = {"(": ")", "[": "]", "{": "}", '"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019", "*": "*"}

# Multiple-choice letter forms (after wrappers and a trailing period are gone): "b", "(b)", "b)",
# "option b", "choice (b)".
_LETTER_RE = re.compile(r"^(?:(?:option|choice)\s*)?(?:\(([a-z])\)|([a-z])\)?)$")

_NUMBER_BODY = (
    r"(?P<whole>\d+)\s+(?P<mnum>\d+)\s*/\s*(?P<mden>\d+)"  # mixed number: 1 1/2
    r"|(?P<fnum>\d+)\s*/\s*(?P<fden>\d+)"  # simple fraction: 3/4
    r"|(?P<dec>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[+-]?\d+)?|\.\d+(?:e[+-]?\d+)?)"  # 1,234.5 / 12 / .5 / 1e3
)
# Unit abbreviations that may be written glued to the number ("7km", "5kg"); any other unit word
# needs a space before it, so that "2x" is not read as 2.
_GLUED_UNITS = (
    r"km/h|kmh|km|cm|mm|m/s|m|kg|mg|g|ml|l|hrs|hr|h|min|mins|sec|secs|s|ft|in|mi|mph|lbs|lb|oz|yd|yds"
    r"|cm²|m²|km²|m2|cm2|km2|m³|cm³|m3|cm3|°c|°f|°"
)
_UNIT_WORD = r"[a-z°][a-z0-9.²³/'^°-]*"
_NUMBER_RE = re.compile(
    r"^(?P<s1>[+-]?)\s*(?P<c1>[$€£]?)\s*(?P<s2>[+-]?)\s*(?:" + _NUMBER_BODY + r")"
    r"\s*[$€£]?\s*%?"
    r"(?:(?:" + _GLUED_UNITS + r")(?![a-z])|\s+" + _UNIT_WORD + r"(?:\s+" + _UNIT_WORD + r"){0,2})?$"
)
_CANONICAL_NUMBER_RE = re.compile(r"^-?\d+(?:\.\d+)?$")


def _strip_wrappers(s: str) -> str:
    """Remove one pair of matching quotes/brackets/asterisks around the whole of ``s``, if any."""
    if len(s) < 2 or s[0] not in _PAIRS or s[-1] != _PAIRS[s[0]]:
        return s
    opener, closer = s[0], _PAIRS[s[0]]
    if opener != closer:  # the opener must be closed by the last character, not earlier: "(1)(2)" stays
        depth = 0
        for i, ch in enumerate(s):
            if ch == opener:
                depth += 1
            elif ch == closer:
                depth -= 1
                if depth == 0 and i != len(s) - 1:
                    return s
    return s[1:-1].strip()


def _render(value: Decimal) -> str:
    """Plain decimal text: no exponent, at most MAX_DECIMALS places (half even), no trailing zeros, no -0."""
    if value.is_zero():
        return "0"
    with localcontext() as ctx:
        adjusted = value.adjusted()
        if adjusted < 10_000:  # beyond this, quantizing would need an absurd precision; keep digits as they are
            ctx.prec = max(28, adjusted + MAX_DECIMALS + 2)
            value = value.quantize(Decimal(1).scaleb(-MAX_DECIMALS), rounding=ROUND_HALF_EVEN)
        value = value.normalize()
    if value.is_zero():
        return "0"
    return format(value, "f")


def parse_number(text: str) -> Decimal | None:
    """The value of ``text`` if, after lowercasing, it is a number in one of the forms
    :func:`normalize_answer` understands (thousands separators, currency symbol, percent sign, a short
    trailing unit, a simple fraction or mixed number); ``None`` otherwise.

    >>> parse_number("$1,234.50")
    Decimal('1234.50')
    >>> parse_number("1 1/2 cups")
    Decimal('1.5')
    >>> parse_number("paris") is None
    True
    """
    s = " ".join(text.translate(_UNICODE_FIXES).lower().split())
    m = _NUMBER_RE.match(s)
    if m is None or (m["s1"] and m["s2"]):
        return None
    negative = (m["s1"] or m["s2"]) == "-"
    with localcontext() as ctx:
        ctx.prec = 60
        try:
            if m["dec"] is not None:
                value = Decimal(m["dec"].replace(",", ""))
            elif m["fnum"] is not None:
                if int(m["fden"]) == 0:
                    return None
                value = Decimal(m["fnum"]) / Decimal(m["fden"])
            else:
                if int(m["mden"]) == 0:
                    return None
                value = Decimal(m["whole"]) + Decimal(m["mnum"]) / Decimal(m["mden"])
        except InvalidOperation:
            return None
    return -value if negative else value


def normalize_answer(text: str) -> str:
    """Canonical form of a final answer, for comparing answers by string equality.

    Rules, in order:

    1. Unicode minus/nbsp fixed, surrounding whitespace stripped, lowercased, internal whitespace
       collapsed to single spaces.
    2. Repeatedly, until nothing changes: drop a leading "the answer is" / "answer:" /
       "final answer:" (also "the final answer is", "correct answer:", "so the answer is"), unwrap
       ``\\boxed{...}``, drop trailing periods, and unwrap one pair of quotes, brackets or ``*``
       enclosing the whole answer. ``\\frac{a}{b}`` becomes ``a/b``.
    3. A multiple-choice letter form ("(b)", "b)", "b", "option b", "choice (b)") becomes the letter.
    4. A number (see :func:`parse_number`) is rendered plainly: thousands separators, currency
       symbols, a percent sign and a short trailing unit are dropped; fractions and mixed numbers are
       evaluated; at most 6 decimal places (round half even), no trailing zeros, no exponent, and
       no negative zero: "1,234" -> "1234", "$3.50" -> "3.5", "4.0" -> "4", "3/4" -> "0.75".
    5. Anything else is returned as the lowercased, whitespace-collapsed text from step 2.

    >>> normalize_answer("The answer is $1,234.50.")
    '1234.5'
    >>> normalize_answer("Answer: (B)")
    'b'
    >>> normalize_answer("  Paris ")
    'paris'
    """
    s = " ".join(text.translate(_UNICODE_FIXES).lower().split())
    s = _FRAC_TEX_RE.sub(r"\1/\2", s)
    while True:
        before = s
        s = _PREFIX_RE.sub("", s, count=1)
        boxed = _BOXED_RE.match(s)
        if boxed:
            s = boxed.group(1).strip()
        while len(s) > 1 and s.endswith("."):
            s = s[:-1].rstrip()
        s = _strip_wrappers(s)
        if s == before:
            break
    letter = _LETTER_RE.match(s)
    if letter:
        return letter.group(1) or letter.group(2)
    value = parse_number(s)
    if value is not None:
        return _render(value)
    return s


# ----------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------

# "answer is X", "the answer is: X", "Answer: X", "**Final answer:** X", "answer = X".
# The span is captured inside a lookahead so that matches do not consume it: a later phrase on the
# same line ("The answer is 40. No: the answer is 42.") is still found.
_ANSWER_PHRASE_RE = re.compile(
    r"\banswer(?:\s+is\b|\s*\**\s*[:=])[ \t]*\**[ \t]*:?[ \t]*\**[ \t]*(?=(?P<x>[^\n]*))", re.IGNORECASE
)
# End of the answer span: a sentence end, a clause break (", " / ";"), so "42. Check: 6*7" gives "42".
_SPAN_END_RE = re.compile(r"[.!?;](?=\s|$)|,\s")
# "the answer is correct" is a remark about an answer, not an answer.
_NOT_AN_ANSWER_RE = re.compile(r"^(?:correct|incorrect|right|wrong|not\b|clear|reasonable|valid|that|as follows|below)\b", re.IGNORECASE)
_HASHES_RE = re.compile(r"####[ \t]*(?P<x>[^\n]*)")
_LAST_NUMBER_RE = re.compile(r"(?<![\w.])-?[$€£]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?!\d)")


def _boxed_contents(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (braces balanced) in ``text``, or None."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth = 0
        for i in range(start + len("\\boxed"), len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    inner = text[start + len("\\boxed{") : i].strip()
                    if inner:
                        return inner
                    break
        start = text.rfind("\\boxed{", 0, start)
    return None


def _clean_span(span: str) -> str:
    """Trim whitespace and markdown emphasis around an extracted span; prefer a \\boxed{} inside it."""
    boxed = _boxed_contents(span)
    if boxed is not None:
        return boxed
    return span.strip().strip("*_").strip()


def _answer_phrase(text: str) -> str | None:
    """The span after the last usable "answer is"/"answer:" phrase, or None."""
    for m in reversed(list(_ANSWER_PHRASE_RE.finditer(text))):
        x = m["x"]
        if not x.strip():  # "The answer is:\n42": take the next non-empty line
            rest = text[m.end() + len(m["x"]) :].lstrip("\n")
            rest_lines = [line for line in rest.split("\n") if line.strip()]
            x = rest_lines[0] if rest_lines else ""
        if "\\boxed{" not in x:
            end = _SPAN_END_RE.search(x)
            if end:
                x = x[: end.start()]
        x = _clean_span(x)
        if x and not _NOT_AN_ANSWER_RE.match(x):
            return x
    return None


def extract_final_answer(text: str) -> str | None:
    """The raw final-answer span of free-form model output (not normalised), or None.

    In order of preference:

    1. the text after the *last* "the answer is" / "final answer:" / "answer:" phrase, up to the end
       of that sentence or clause (a ``\\boxed{}`` inside it is unwrapped; a phrase followed by an
       empty line-rest takes the next non-empty line; "the answer is correct"-style remarks are
       skipped);
    2. the rest of the line after the last ``####``;
    3. the contents of the last ``\\boxed{...}``;
    4. the last number in the text (with its sign, thousands separators and a leading currency
       symbol, or a simple fraction ``a/b``).

    >>> extract_final_answer("3 boxes of 4 is 12. The answer is 12. Check: 12 / 4 = 3.")
    '12'
    >>> extract_final_answer("6 * 7 = 42\\n#### 42")
    '42'
    >>> extract_final_answer("no numbers here") is None
    True
    """
    phrase = _answer_phrase(text)
    if phrase is not None:
        return phrase
    for m in reversed(list(_HASHES_RE.finditer(text))):
        x = _clean_span(m["x"])
        if x:
            return x
    boxed = _boxed_contents(text)
    if boxed is not None:
        return boxed
    numbers = _LAST_NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


# ----------------------------------------------------------------------------------------------
# Comparison and voting
# ----------------------------------------------------------------------------------------------


def answers_match(predicted: str | None, gold: str) -> bool:
    """Whether ``predicted`` and ``gold`` are the same answer after :func:`normalize_answer`.

    ``None`` or an empty prediction never matches. When both normalise to numbers they match if they
    differ by at most 1e-6; otherwise the normalised strings must be equal.

    >>> answers_match("$12.00", "12")
    True
    >>> answers_match("(C)", "c")
    True
    """
    if predicted is None:
        return False
    p, g = normalize_answer(predicted), normalize_answer(gold)
    if not p or not g:
        return False
    if _CANONICAL_NUMBER_RE.match(p) and _CANONICAL_NUMBER_RE.match(g):
        return abs(Decimal(p) - Decimal(g)) <= NUMERIC_TOLERANCE
    return p == g


def majority(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """The most frequent normalised answer and how many answers had it.

    ``None`` entries and answers that normalise to the empty string are not counted. Ties go to the
    answer whose first occurrence comes first. No countable answers gives ``(None, 0)``.

    >>> majority(["12", "$12.00", "13", "13"])
    ('12', 2)
    """
    normalized = [normalize_answer(a) for a in answers if a is not None]
    counts = Counter(n for n in normalized if n)
    if not counts:
        return None, 0
    # Counter preserves first-insertion order and max() returns the first maximal item.
    best = max(counts, key=lambda k: counts[k])
    return best, counts[best]
