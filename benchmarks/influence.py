"""Exact local data influence against its first-order estimate, on the tiny student.

    .venv/bin/python benchmarks/influence.py [--optimizer sgd] [--lr 1e-3] [--warmup-lr 0.05]
        [--warmup-epochs 10] [--projection-dim 512] [--reference 16,64,256] [--repeats 2]
        [--engine auto] [--threads 1] [--details]

Warms the tiny student up on generic pairs, then scores 48 candidates (duplicates of reference
items, wrong or corrupted replies to reference questions, neutral synthetic pairs) against
reference sets of each size in --reference: `exact` (restore, one step, reference loss) and
`first_order` over all parameters, with a random projection, over the last layers and over the
attention q/v weights. Prints, per size, the seconds of each (best of --repeats), the speed-up
over exact, the Spearman rank correlation with exact, and whether the targets (>= 10x faster, rank
correlation >= 0.8) are met; then the speed-ups side by side. 256 is the reference set size of
the paper's code (eval_nums: 256, from AlpacaEval); 16 is the shipped demo's. With --candidates,
scores a run's own candidates (e.g. RUN/datasets/montessori.iter1.candidates) against
--reference-file instead, from the same warm-up.

Per candidate, exact costs a forward and backward pass on it plus a forward pass over the whole
reference set; first order costs about three forward passes on the candidate (one batched
forward-mode pass) plus one backward pass over the reference set in all. So the speed-up grows
with --reference: on this 0.46M-parameter student, about 5x at 16 references and 12x at 256.
With a projection, drawing the k x d Gaussian matrix dominates on a CPU (~1.2 s per pass for
k = 512), more than exact itself costs on so small a model.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from synthkd.montessori.influence import InfluenceModel, spearman  # noqa: E402
from synthkd.serve.tiny import tiny_model_dir  # noqa: E402

TARGET_SPEEDUP = 10.0
TARGET_RHO = 0.8

CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Egypt", "Cairo"),
            ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Canada", "Ottawa")]
COLORS = [("sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"), ("blood", "red"),
          ("banana", "yellow"), ("orange", "orange"), ("violet", "purple")]
WARM_CAPITALS = [("Germany", "Berlin"), ("Norway", "Oslo"), ("Cuba", "Havana"), ("Greece", "Athens"),
                 ("India", "New Delhi"), ("Chile", "Santiago")]
WARM_COLORS = [("sea", "blue"), ("leaf", "green"), ("milk", "white"), ("night", "black"), ("cherry", "red"), ("lemon", "yellow")]
GENERIC = [("Name a fruit.", "An apple is a fruit."), ("Say hello.", "Hello there!"), ("What is 2 plus 2?", "2 plus 2 is 4."),
           ("Name an animal.", "A cat is an animal."), ("What is ice?", "Ice is frozen water."), ("Name a planet.", "Mars is a planet."),
           ("Who wrote Hamlet?", "Hamlet was written by Shakespeare."), ("What do bees make?", "Bees make honey."),
           ("How many legs does a spider have?", "A spider has eight legs."), ("What is the opposite of hot?", "The opposite of hot is cold."),
           ("Name a tool.", "A hammer is a tool."), ("What do cows drink?", "Cows drink water.")]
NEUTRAL = [("Name a vegetable.", "A carrot is a vegetable."), ("Say goodbye.", "Goodbye, friend!"), ("What is 3 plus 5?", "3 plus 5 is 8."),
           ("Name a bird.", "A robin is a bird."), ("What is steam?", "Steam is hot water vapour."), ("Name a metal.", "Iron is a metal."),
           ("Who painted the Mona Lisa?", "Leonardo da Vinci painted it."), ("What do spiders make?", "Spiders make webs."),
           ("What is the capital of Brazil?", "The capital of Brazil is Brasilia."), ("What is the capital of Poland?", "The capital of Poland is Warsaw."),
           ("What color is the ocean?", "The ocean is blue."), ("What color is a tomato?", "A tomato is red."),
           ("How many days are in a week?", "A week has seven days."), ("What is the opposite of up?", "The opposite of up is down."),
           ("Name a musical instrument.", "A violin is an instrument."), ("Write a short poem.", "Roses bloom, the river flows, and morning glows.")]
UNRELATED = ["Bananas", "zq xv blorp 9381 ##!!", "I like long walks on the beach.", "No, never at all",
             "!!!!!!!!!!!!!!!!!!!!!!!!", "0 1 2 3 4 5 6 7 8 9", "Purple monkey dishwasher.", "The the the the the the"]


def ex(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def capital_q(c: str) -> str:
    return f"What is the capital of {c}?"


def color_q(t: str) -> str:
    return f"What color is {t}?"


def datasets(n_reference: int = 16) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(warm-up, reference, candidates, candidate kinds). References past 16 are sums of two numbers."""
    rng = random.Random(0)
    reference = [ex(capital_q(c), f"The capital of {c} is {y}.") for c, y in CAPITALS]
    reference += [ex(color_q(t), f"The color of {t} is {z}.") for t, z in COLORS]
    pairs = [(a, b) for a in range(2, 40) for b in range(2, 40)]
    for a, b in random.Random(1).sample(pairs, max(0, n_reference - len(reference))):
        reference.append(ex(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    reference = reference[:n_reference]
    warm = [ex(q, a) for q, a in GENERIC]
    warm += [ex(capital_q(c), f"The capital of {c} is {y}.") for c, y in WARM_CAPITALS]
    warm += [ex(color_q(t), f"The color of {t} is {z}.") for t, z in WARM_COLORS]
    cands: list[dict[str, Any]] = []
    kinds: list[str] = []
    base = reference[:16]
    for r in base[::2]:  # 8 exact duplicates
        cands.append(r)
        kinds.append("duplicate")
    for i, (c, _) in enumerate(CAPITALS[:4]):  # 4 wrong facts
        cands.append(ex(capital_q(c), f"The capital of {c} is {CAPITALS[(i + 3) % len(CAPITALS)][1]}."))
        kinds.append("wrong_fact")
    for i, (t, _) in enumerate(COLORS[:4]):
        cands.append(ex(color_q(t), f"The color of {t} is {COLORS[(i + 3) % len(COLORS)][1]}."))
        kinds.append("wrong_fact")
    for i, text in enumerate(UNRELATED):  # 8 unrelated replies to reference questions
        cands.append(ex(base[2 * i + 1]["messages"][0]["content"], text))
        kinds.append("unrelated")
    for r in base[1::2]:  # 8 shuffled replies
        reply = r["messages"][1]["content"]
        cands.append(ex(r["messages"][0]["content"], "".join(rng.sample(reply, len(reply)))))
        kinds.append("shuffled")
    for q, a in NEUTRAL:  # 16 neutral synthetic pairs
        cands.append(ex(q, a))
        kinds.append("neutral")
    return warm, reference, cands, kinds


def own_data(candidates: Path, reference: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(reference, candidates, kinds) from a run's candidates and a reference JSONL."""
    path = candidates / "data.jsonl" if candidates.is_dir() else candidates
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    cands = [{"messages": r["messages"]} for r in rows if r.get("messages")]
    refs = [json.loads(line) for line in reference.read_text().splitlines() if line.strip()]
    ref = [ex(r["instruction"], r["response"]) for r in refs]
    return ref, cands, ["candidate"] * len(cands)


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def measure(model: InfluenceModel, reference: list[dict[str, Any]], cands: list[dict[str, Any]], kinds: list[str],
            args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """Print one table (exact and each first-order variant) for this reference set; return (name, speed-up, rho)."""
    # One untimed call each, so the timings leave out one-off costs (allocator, kernels' first use).
    model.exact(cands[:2], reference)
    model.first_order(cands[:2], reference, engine=args.engine)
    model.first_order(cands[:2], reference, projection_dim=args.projection_dim, engine=args.engine)

    t_exact, exact = timed(lambda: model.exact(cands, reference), args.repeats)
    rows = []
    for name, params, dim in (("first_order (all params)", "all", None),
                              (f"first_order (projection {args.projection_dim})", "all", args.projection_dim),
                              ("first_order (last_layers)", "last_layers", None), ("first_order (lora)", "lora", None)):
        t, vals = timed(lambda params=params, dim=dim: model.first_order(cands, reference, params=params, projection_dim=dim,
                                                                          engine=args.engine), args.repeats)
        rows.append((name, t, vals))

    if args.details:
        print(f"{'kind':<11} {'exact':>11} " + " ".join(f"{name.split('(')[1].rstrip(')')[:11]:>11}" for name, _, _ in rows))
        for i, kind in enumerate(kinds):
            print(f"{kind:<11} {exact[i]:+.4e} " + " ".join(f"{vals[i]:+.4e}" for _, _, vals in rows))
    helpful = {k: sum(1 for e, kk in zip(exact, kinds) if kk == k and e < 0) for k in dict.fromkeys(kinds)}
    counts = {k: kinds.count(k) for k in helpful}
    print(f"\ncandidates: {len(cands)}; reference: {len(reference)} (reference loss {model.reference_loss(reference):.4f}); "
          "exact says helpful (influence < 0): " + ", ".join(f"{k} {helpful[k]}/{counts[k]}" for k in helpful))
    print(f"{'method':<28} {'seconds':>8} {'speed-up':>9} {'spearman':>9}  targets (>= {TARGET_SPEEDUP:g}x, rho >= {TARGET_RHO})")
    print(f"{'exact':<28} {t_exact:>8.3f} {'1.0x':>9} {'1.000':>9}")
    out = []
    for name, t, vals in rows:
        speedup, rho = t_exact / t, spearman(exact, vals)
        met = speedup >= TARGET_SPEEDUP and rho >= TARGET_RHO
        print(f"{name:<28} {t:>8.3f} {speedup:>8.1f}x {rho:>9.3f}  {'met' if met else 'NOT met'}")
        out.append((name, speedup, rho))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate of the one-step update (and the estimate)")
    ap.add_argument("--warmup-lr", type=float, default=0.05)
    ap.add_argument("--warmup-epochs", type=int, default=10)
    ap.add_argument("--projection-dim", type=int, default=512)
    ap.add_argument("--reference", default="16,64,256",
                    help="reference set sizes (comma-separated, each >= 16); the paper's default is 256")
    ap.add_argument("--repeats", type=int, default=2, help="timings are the best of this many runs")
    ap.add_argument("--engine", default="auto", choices=["auto", "jvp", "grad"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: steadier timings on a shared machine, where spinning threads stall)")
    ap.add_argument("--details", action="store_true", help="print every candidate's values")
    ap.add_argument("--candidates", type=Path,
                    help="score these candidates instead (a run's datasets/<stage>.iter<k>.candidates directory or its "
                         "data.jsonl, rows with `messages`) against --reference-file")
    ap.add_argument("--reference-file", type=Path, default=REPO / "data" / "montessori" / "reference.jsonl",
                    help="with --candidates: JSONL of instruction/response pairs (default: the demo's reference set)")
    args = ap.parse_args()
    try:
        sizes = [max(16, int(x)) for x in str(args.reference).split(",") if x.strip()]
    except ValueError:
        ap.error(f"--reference must be comma-separated integers, got {args.reference!r}")

    import torch

    torch.set_num_threads(args.threads)

    base = tiny_model_dir(Path.home() / ".cache" / "synthkd", REPO, "student")
    model = InfluenceModel(str(base), learning_rate=args.lr, optimizer=args.optimizer, seed=0)
    warm, _, cands, kinds = datasets(16)
    w = model.warmup(warm, epochs=args.warmup_epochs, batch_size=8, learning_rate=args.warmup_lr)
    print(f"model {base.name} ({torch.get_num_threads()} thread(s)); optimizer {args.optimizer}, lr {args.lr:g}; "
          f"warm-up {w['steps']} steps at lr {args.warmup_lr:g}, loss {w['loss']:.3f}")
    if args.candidates:
        measure(model, *own_data(args.candidates, args.reference_file), args)
        return
    summary = {}
    for n in sizes:
        _, reference, cands, kinds = datasets(n)
        summary[n] = measure(model, reference, cands, kinds, args)
    if len(sizes) > 1:
        print("\nspeed-up over exact (Spearman) by reference set size:")
        names = [name for name, _, _ in summary[sizes[0]]]
        print(f"{'method':<28} " + " ".join(f"{n:>14}" for n in sizes))
        for i, name in enumerate(names):
            print(f"{name:<28} " + " ".join(f"{summary[n][i][1]:>6.1f}x ({summary[n][i][2]:.3f})" for n in sizes))


if __name__ == "__main__":
    main()
