"""SKD critic: threshold choice on a known precision/recall curve, and a real tiny classifier critic
trained on the CPU that must raise the precision of held-out triples above their base rate."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from synthkd.skd.critic import ClassifierArgs, choose_threshold, nli_text, pr_curve, score_texts, train_classifier, train_val_split
from synthkd.train.common import checkpoint_done, read_metrics
from synthkd.train.launch import Job, train

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parent.parent

T, F = True, False
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
LABELS = [T, T, F, T, F, F]  # 3 positives


# ---------------------------------------------------------------------------------------------------
# Threshold selection, by hand
# ---------------------------------------------------------------------------------------------------


def test_pr_curve_known_points() -> None:
    # t    kept  tp  precision  recall
    # 0.9  1     1   1/1        1/3
    # 0.8  2     2   2/2        2/3
    # 0.7  3     2   2/3        2/3
    # 0.6  4     3   3/4        3/3
    # 0.5  5     3   3/5        3/3
    # 0.4  6     3   3/6        3/3
    assert pr_curve(SCORES, LABELS) == [
        {"threshold": 0.9, "precision": 1.0, "recall": 1 / 3, "kept": 1, "tp": 1},
        {"threshold": 0.8, "precision": 1.0, "recall": 2 / 3, "kept": 2, "tp": 2},
        {"threshold": 0.7, "precision": 2 / 3, "recall": 2 / 3, "kept": 3, "tp": 2},
        {"threshold": 0.6, "precision": 0.75, "recall": 1.0, "kept": 4, "tp": 3},
        {"threshold": 0.5, "precision": 0.6, "recall": 1.0, "kept": 5, "tp": 3},
        {"threshold": 0.4, "precision": 0.5, "recall": 1.0, "kept": 6, "tp": 3},
    ]


def test_pr_curve_ties_order_and_no_positives() -> None:
    # Unsorted input with a tie at 0.5: both tied items enter at t=0.5 together.
    assert pr_curve([0.5, 0.9, 0.5], [F, T, T]) == [
        {"threshold": 0.9, "precision": 1.0, "recall": 0.5, "kept": 1, "tp": 1},
        {"threshold": 0.5, "precision": 2 / 3, "recall": 1.0, "kept": 3, "tp": 2},
    ]
    # No positives: recall is defined as 0.0.
    assert pr_curve([0.2, 0.1], [F, F]) == [
        {"threshold": 0.2, "precision": 0.0, "recall": 0.0, "kept": 1, "tp": 0},
        {"threshold": 0.1, "precision": 0.0, "recall": 0.0, "kept": 2, "tp": 0},
    ]


def test_choose_threshold_target_recall() -> None:
    # Recall >= 0.6 first reached (from the top) at t=0.8 (2/3); precision there is 1.0, 2 of 6 kept.
    assert choose_threshold(SCORES, LABELS, target_recall=0.6) == {
        "threshold": 0.8, "precision": 1.0, "recall": 2 / 3, "kept_fraction": 2 / 6, "met": True,
        "target": {"recall": 0.6},
    }
    # Recall >= 0.9 needs all 3 positives: highest such t is 0.6 (precision 3/4, 4 of 6 kept).
    assert choose_threshold(SCORES, LABELS, target_recall=0.9) == {
        "threshold": 0.6, "precision": 0.75, "recall": 1.0, "kept_fraction": 4 / 6, "met": True,
        "target": {"recall": 0.9},
    }
    # Recall 1/3 at t=0.9 already meets 0.3: the top threshold wins.
    assert choose_threshold(SCORES, LABELS, target_recall=0.3)["threshold"] == 0.9


def test_choose_threshold_target_precision() -> None:
    # Precision >= 0.7 at t = 0.9, 0.8 (1.0), 0.6 (0.75); not at 0.7 (2/3) or below 0.6. Lowest: 0.6.
    assert choose_threshold(SCORES, LABELS, target_precision=0.7) == {
        "threshold": 0.6, "precision": 0.75, "recall": 1.0, "kept_fraction": 4 / 6, "met": True,
        "target": {"precision": 0.7},
    }
    # Precision >= 0.99 only at t = 0.9 and 0.8 (1.0): the lowest, 0.8, keeps the most.
    assert choose_threshold(SCORES, LABELS, target_precision=0.99) == {
        "threshold": 0.8, "precision": 1.0, "recall": 2 / 3, "kept_fraction": 2 / 6, "met": True,
        "target": {"precision": 0.99},
    }


def test_choose_threshold_unmet_precision() -> None:
    # Top item is negative: t=0.9 -> 0/1, t=0.8 -> 1/2, t=0.7 -> 1/3. Nothing reaches 0.6, so the
    # best precision (0.5 at t=0.8) comes back with met=False.
    assert choose_threshold([0.9, 0.8, 0.7], [F, T, F], target_precision=0.6) == {
        "threshold": 0.8, "precision": 0.5, "recall": 1.0, "kept_fraction": 2 / 3, "met": False,
        "target": {"precision": 0.6},
    }


def test_choose_threshold_unmet_recall_without_positives() -> None:
    # No positives: recall is 0.0 everywhere, so no target recall can be met; the largest selection
    # (lowest threshold) comes back with met=False.
    assert choose_threshold([0.3, 0.1], [F, F], target_recall=0.5) == {
        "threshold": 0.1, "precision": 0.0, "recall": 0.0, "kept_fraction": 1.0, "met": False,
        "target": {"recall": 0.5},
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target_recall": 0.5, "target_precision": 0.5}, "exactly one"),
        ({}, "exactly one"),
        ({"target_recall": 0}, r"strictly between 0 and 1"),
        ({"target_recall": 1.0}, r"strictly between 0 and 1"),
        ({"target_recall": 1.5}, r"strictly between 0 and 1"),
        ({"target_precision": 0.0}, r"strictly between 0 and 1"),
        ({"target_precision": 1}, r"strictly between 0 and 1"),
        ({"target_precision": 1.5}, r"strictly between 0 and 1"),
        ({"target_precision": float("nan")}, r"strictly between 0 and 1"),
        ({"target_recall": True}, r"strictly between 0 and 1"),
    ],
)
def test_choose_threshold_rejects_bad_targets(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        choose_threshold(SCORES, LABELS, **kwargs)


def test_choose_threshold_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        choose_threshold([0.1, 0.2], [T], target_recall=0.5)
    with pytest.raises(ValueError, match="no scored items"):
        choose_threshold([], [], target_recall=0.5)


def test_nli_text() -> None:
    assert nli_text("  PersonX   goes home ", " PersonX wants ", "  to  rest ") == ("PersonX goes home", "PersonX wants to rest")


def test_train_val_split_stratified_and_deterministic() -> None:
    items = [{"id": i, "label": i % 4 == 0} for i in range(40)]  # 10 positives, 30 negatives
    train, val = train_val_split(items, 0.2, seed=3)
    assert (train, val) == train_val_split(items, 0.2, seed=3)
    assert train_val_split(items, 0.2, seed=4) != (train, val)
    assert sorted(it["id"] for it in train + val) == list(range(40))
    assert sum(it["label"] for it in val) == 2 and sum(not it["label"] for it in val) == 6
    assert [it["id"] for it in val] == sorted(it["id"] for it in val)  # original order kept
    # A 2-item class still gets one val item; a 1-item class stays in train.
    tiny = [{"label": True}, {"label": True}, {"label": False}]
    tr, va = train_val_split(tiny, 0.1, seed=0)
    assert va == [{"label": True}] and len(tr) == 2
    # Not labelled dicts: a plain split.
    tr, va = train_val_split(list(range(10)), 0.3, seed=0)
    assert len(va) == 3 and sorted(tr + va) == list(range(10))
    with pytest.raises(ValueError):
        train_val_split(items, 1.0, seed=0)


# ---------------------------------------------------------------------------------------------------
# A real tiny critic, trained on the CPU
# ---------------------------------------------------------------------------------------------------

HEADS = [
    "PersonX goes to the store", "PersonX works all night", "PersonX runs a marathon", "PersonX cooks for friends",
    "PersonX loses their keys", "PersonX buys a new car", "PersonX gets a promotion", "PersonX misses the bus",
    "PersonX paints the house", "PersonX reads a long book", "PersonX plants a garden", "PersonX fixes the sink",
    "PersonX visits PersonY", "PersonX wins the game", "PersonX forgets a birthday", "PersonX moves to a new city",
]
VERBS = ["eat", "rest", "call", "visit", "buy", "find", "clean", "read", "watch", "cook", "thank", "help"]
OBJECTS = ["dinner", "a friend", "some water", "the family", "a doctor", "the house", "a movie", "their mom", "a gift", ""]
NOISE = ["purple", "seven", "yesterday", "banana", "green", "the", "of", "and", "PersonY", "is", "was"]


def good_tail(rng: random.Random) -> str:
    """A plausible xWant tail: "to <verb> [object]"."""
    return f"to {rng.choice(VERBS)} {rng.choice(OBJECTS)}".strip()


def bad_tail(rng: random.Random) -> str:
    """An invalid tail over the same words: shuffled, wrong type, or function-word soup."""
    kind = rng.randrange(4)
    if kind == 0:  # a good tail with its words shuffled so it no longer reads "to <verb> ..."
        words = good_tail(rng).split()
        while words[0] == "to":
            rng.shuffle(words)
        return " ".join(words)
    if kind == 1:  # wrong type: a bare noun or adjective, no verb phrase
        return rng.choice([*NOISE[:5], *[o for o in OBJECTS if o]])
    if kind == 2:  # repeated tokens
        word = rng.choice(["PersonY", "the", "of", "and", rng.choice(VERBS)])
        return " ".join([word] * rng.randint(2, 3))
    return " ".join(rng.choice(NOISE) for _ in range(rng.randint(2, 4)))  # word soup


def labelled_triples(n: int = 320, seed: int = 11) -> list[dict]:
    """n xWant triples, about half valid ("to <verb phrase>") and half invalid tails."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        label = rng.random() < 0.5
        tail = good_tail(rng) if label else bad_tail(rng)
        premise, hypothesis = nli_text(rng.choice(HEADS), "PersonX wants", tail)
        items.append({"premise": premise, "hypothesis": hypothesis, "label": label, "id": i})
    return items


@pytest.mark.needs_torch
def test_tiny_critic_raises_precision(synthkd_home: Path, tmp_path: Path) -> None:
    from synthkd.serve.tiny import tiny_model_dir

    base = tiny_model_dir(synthkd_home, REPO, "critic")
    items = labelled_triples()
    rest, test = train_val_split(items, 0.25, seed=0)
    train, val = train_val_split(rest, 0.25, seed=1)

    started = time.monotonic()
    metrics = train_classifier(train, val, str(base), tmp_path / "critic", epochs=4, learning_rate=5e-4, batch_size=16, seed=0)
    train_seconds = time.monotonic() - started
    assert metrics["train_examples"] == len(train) and metrics["val_examples"] == len(val) and metrics["epochs"] == 4
    assert (tmp_path / "critic" / "config.json").is_file() and not (tmp_path / "critic.tmp").exists()

    val_scores = score_texts(tmp_path / "critic", [(it["premise"], it["hypothesis"]) for it in val])
    choice = choose_threshold(val_scores, [it["label"] for it in val], target_recall=0.8)
    test_scores = score_texts(tmp_path / "critic", [(it["premise"], it["hypothesis"]) for it in test])
    assert len(test_scores) == len(test) and all(0.0 <= s <= 1.0 for s in test_scores)

    kept = [it for it, s in zip(test, test_scores) if s >= choice["threshold"]]
    base_precision = sum(it["label"] for it in test) / len(test)
    filtered_precision = sum(it["label"] for it in kept) / len(kept) if kept else 1.0
    kept_fraction = len(kept) / len(test)
    print(
        f"\n[critic] train={len(train)} val={len(val)} test={len(test)} train_s={train_seconds:.1f} "
        f"loss={metrics['train_loss']:.3f} val_accuracy={metrics['val_accuracy']:.3f} "
        f"threshold={choice['threshold']:.4f} (val P={choice['precision']:.3f} R={choice['recall']:.3f})\n"
        f"[critic] test: unfiltered precision={base_precision:.3f} filtered precision={filtered_precision:.3f} "
        f"kept={kept_fraction:.3f} ({len(kept)}/{len(test)})"
    )
    assert filtered_precision > base_precision
    assert kept_fraction >= 0.2

    # Scoring is deterministic and order-preserving (batching does not change the numbers).
    again = score_texts(tmp_path / "critic", [(it["premise"], it["hypothesis"]) for it in test][::-1], batch_size=7)
    assert again[::-1] == pytest.approx(test_scores, abs=1e-5)


# ---------------------------------------------------------------------------------------------------
# The critic as a launcher job (kind "classifier")
# ---------------------------------------------------------------------------------------------------

PAIRS = [{"premise": "PersonX eats", "hypothesis": "As a result, PersonX wants to rest", "label": True},
         {"premise": "PersonX eats", "hypothesis": "As a result, PersonX wants purple the", "label": False}]


def _critic_job(out: Path = Path("ckpt"), **args: object) -> Job:
    classifier = ClassifierArgs(**{"epochs": 2, "val": PAIRS[::-1], **args})
    return Job("classifier", [dict(p) for p in PAIRS], "tiny:critic", out, {}, None, 0, classifier=classifier)


def test_classifier_job_fingerprint_stable_and_kind_specific() -> None:
    job = _critic_job()
    assert job.fingerprint == _critic_job().fingerprint == "41d29bb4a18bf918"  # pinned: a change retrains finished critics
    # How it runs is not what it trains: a critic trained on N processes is reused on M.
    assert replace(job, processes=2, accelerate_config=Path("ddp.yaml"), log_path=Path("x.log"), out_dir=Path("elsewhere"),
                   base_path="/weights").fingerprint == job.fingerprint
    # What the weights (and the metrics the checkpoint holds) depend on.
    changed = [replace(job, rows=job.rows[:1]), replace(job, seed=1), replace(job, base_model="tiny:other"),
               _critic_job(epochs=3), _critic_job(learning_rate=1e-3), _critic_job(batch_size=8), _critic_job(max_length=64),
               _critic_job(val=PAIRS[:1])]
    assert len({job.fingerprint, *(c.fingerprint for c in changed)}) == 1 + len(changed)
    # The classifier's arguments belong to its kind only; sft and dpo fingerprints are as they were before it.
    with pytest.raises(ValueError, match="takes no classifier arguments"):
        Job("sft", [], "tiny:student", Path("x"), {}, None, 0, classifier=ClassifierArgs())
    with pytest.raises(ValueError, match="needs classifier arguments"):
        Job("classifier", [dict(p) for p in PAIRS], "tiny:critic", Path("x"), {}, None, 0)
    sft_rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    assert Job("sft", sft_rows, "tiny:student", Path("x"), {"num_train_epochs": 1}, None, 0).fingerprint == "ead6f12da50c3a6d"
    assert Job("dpo", [{"prompt": "p", "chosen": "c", "rejected": "r"}], "m", Path("y"), {"beta": 0.1}, None, 0,
               evaluate_before=True).fingerprint == "02b8597704b60336"


def _weights(checkpoint: Path) -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "model.safetensors"))


@pytest.mark.needs_torch
def test_classifier_job_in_process_is_the_plain_loop(synthkd_home: Path, tmp_path: Path) -> None:
    from synthkd.serve.tiny import tiny_model_dir

    base = str(tiny_model_dir(synthkd_home, REPO, "critic"))
    train_items, val_items = train_val_split(labelled_triples(40), 0.25, seed=0)
    direct = train_classifier(train_items, val_items, base, tmp_path / "direct", epochs=2, batch_size=8, seed=3)

    as_pairs = lambda items: [{k: it[k] for k in ("premise", "hypothesis", "label")} for it in items]  # noqa: E731
    log = tmp_path / "logs" / "train-skd-critic.log"
    job = Job("classifier", as_pairs(train_items), base, tmp_path / "critic", {}, None, 3, log_path=log,
              classifier=ClassifierArgs(epochs=2, batch_size=8, val=as_pairs(val_items)))
    metrics = train(job)
    # In one process the job is the loop itself: the same seed gives the same weights.
    ours, theirs = _weights(job.out_dir), _weights(tmp_path / "direct")
    assert ours.keys() == theirs.keys() and all(torch_equal(ours[k], theirs[k]) for k in ours)
    # Metrics come back as every training run's do, extras kept; the checkpoint is whole (fingerprint) and reusable.
    assert metrics == read_metrics(job.out_dir)
    assert {k: v for k, v in metrics.to_json().items() if k != "seconds"} == {k: v for k, v in direct.items() if k != "seconds"}
    assert checkpoint_done(job.out_dir, job.fingerprint) and not (tmp_path / "critic.tmp").exists()
    text = log.read_text()
    assert f"classifier in this process: {len(train_items)} rows" in text and '"epoch": 2' in text and "done: " in text


def torch_equal(a: "torch.Tensor", b: "torch.Tensor") -> bool:
    import torch

    return bool(torch.equal(a, b))
