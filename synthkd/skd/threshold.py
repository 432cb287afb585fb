"""Choosing the SKD critic's acceptance threshold: the precision/recall curve of its scores on a labelled validation
sample, the threshold that meets a recall or precision target, the stratified train/validation split, and the
NLI-style text the critic reads. Pure functions: no torch."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

def _check_scored(scores: Sequence[float], labels: Sequence[bool]) -> None:
    if len(scores) != len(labels):
        raise ValueError(f"scores and labels differ in length ({len(scores)} vs {len(labels)})")
    if not scores:
        raise ValueError("no scored items: a threshold needs at least one (score, label) pair")
    for s in scores:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s):
            raise ValueError(f"scores must be real numbers, got {s!r}")


def pr_curve(scores: Sequence[float], labels: Sequence[bool]) -> list[dict[str, Any]]:
    """One point per distinct score t (keep items with score >= t), highest t first.

    Each point is {"threshold", "precision", "recall", "kept", "tp"}. Precision of an empty selection
    is 1.0 (it cannot arise here, each threshold keeps at least its own item); recall is 0.0 when there
    are no positives at all.
    """
    _check_scored(scores, labels)
    pairs = sorted(zip((float(s) for s in scores), (bool(x) for x in labels)), key=lambda p: -p[0])
    positives = sum(1 for _, y in pairs if y)
    points: list[dict[str, Any]] = []
    kept = tp = 0
    i = 0
    while i < len(pairs):
        t = pairs[i][0]
        while i < len(pairs) and pairs[i][0] == t:  # all items tied at t enter together
            kept += 1
            tp += pairs[i][1]
            i += 1
        points.append({
            "threshold": t,
            "precision": tp / kept if kept else 1.0,
            "recall": tp / positives if positives else 0.0,
            "kept": kept,
            "tp": tp,
        })
    return points


def _check_target(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    if not 0.0 < float(value) < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be strictly between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def choose_threshold(
    scores: Sequence[float],
    labels: Sequence[bool],
    target_recall: float | None = None,
    target_precision: float | None = None,
) -> dict[str, Any]:
    """Pick an acceptance threshold on labelled scores for one target.

    target_recall: the HIGHEST threshold whose recall >= target (the most precise selection that
    meets the recall). target_precision: the LOWEST threshold whose precision >= target (the largest
    selection that meets the precision). When no threshold meets the target, "met" is False and the
    closest point is returned: for recall the one with the highest recall (lowest threshold), for
    precision the one with the highest precision (the lowest threshold among ties).

    Returns {"threshold", "precision", "recall", "kept_fraction", "met", "target"}.
    """
    if (target_recall is None) == (target_precision is None):
        raise ValueError("give exactly one of target_recall or target_precision")
    curve = pr_curve(scores, labels)
    n = len(scores)
    if target_recall is not None:
        target = {"recall": _check_target("target_recall", target_recall)}
        meeting = [p for p in curve if p["recall"] >= target["recall"]]
        # Curve is in descending threshold order: the first meeting point has the highest threshold.
        point, met = (meeting[0], True) if meeting else (max(curve, key=lambda p: (p["recall"], -p["threshold"])), False)
    else:
        target = {"precision": _check_target("target_precision", target_precision)}
        meeting = [p for p in curve if p["precision"] >= target["precision"]]
        point, met = (meeting[-1], True) if meeting else (max(curve, key=lambda p: (p["precision"], -p["threshold"])), False)
    return {
        "threshold": point["threshold"],
        "precision": point["precision"],
        "recall": point["recall"],
        "kept_fraction": point["kept"] / n,
        "met": met,
        "target": target,
    }


def nli_text(head: str, relation_phrase: str, tail: str) -> tuple[str, str]:
    """(premise, hypothesis) for the classifier: premise = head, hypothesis = "relation_phrase tail",
    each stripped with runs of whitespace collapsed to single spaces."""
    premise = " ".join(str(head).split())
    hypothesis = " ".join(f"{relation_phrase} {tail}".split())
    return premise, hypothesis


def _split_indices(indices: list[int], val_fraction: float, rng: random.Random) -> tuple[list[int], list[int]]:
    order = list(indices)
    rng.shuffle(order)
    n_val = round(len(order) * val_fraction)
    if val_fraction > 0 and len(order) >= 2:
        n_val = min(max(n_val, 1), len(order) - 1)  # at least one val item, at least one train item
    return order[n_val:], order[:n_val]


def train_val_split(items: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic (train, val) split; both keep the items' original order.

    When every item is a dict with a boolean "label", each class is split separately (stratified),
    and a class of two or more items puts at least one item in val (and keeps one in train).
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    rng = random.Random(seed)
    stratified = bool(items) and all(isinstance(it, dict) and isinstance(it.get("label"), bool) for it in items)
    groups: list[list[int]]
    if stratified:
        groups = [[i for i, it in enumerate(items) if it["label"] is cls] for cls in (False, True)]
    else:
        groups = [list(range(len(items)))]
    train_idx: list[int] = []
    val_idx: list[int] = []
    for group in groups:
        tr, va = _split_indices(group, val_fraction, rng)
        train_idx += tr
        val_idx += va
    return [items[i] for i in sorted(train_idx)], [items[i] for i in sorted(val_idx)]
