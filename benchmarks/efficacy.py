"""Which method gives the best student per teacher call? Measured with a real teacher.

Same teacher, same depth-pruned student, same held-out set, the same teacher budget for training
data in every arm (teacher calls and completion tokens are counted and reported), and the same
number of optimizer steps per arm (DPO arms split their steps between SFT and DPO):

  floor          the untrained student;                 ceiling: the teacher itself
  seqkd          sequence-level KD: SFT on teacher answers to instructions drawn uniformly from the pool
  seqkd_seed1    the same with another seed: another uniform draw of instructions and another training
                 seed (instructions both draws share reuse the cached teacher answers, because the
                 request cache key leaves the sampling seed out): run-to-run noise
  lion           Lion, its budget split between seed answers and K iterations of generation
  seqkd_dpo      sequence-level KD, then student DPO on teacher-over-student pairs (DistiLLM-2's black-box form)
  lion_dpo       Lion with its DPO phase

Every arm is a stage group of one synthkd pipeline (written to OUT/efficacy.yaml and run with
`synthkd run`), so the arms share the vLLM servers and the request cache: the teacher's held-out
answers are asked once, and an arm's teacher usage is its calls plus its cache hits (what it would
have paid alone). The run resumes like any pipeline if interrupted. Metrics on the held-out set
(ROUGE-L against the teacher's greedy answer, NLL of that answer, gold accuracy) carry 95% bootstrap
intervals over prompts. Writes OUT/efficacy.json, OUT/efficacy.md and OUT/efficacy.png.

    .venv/bin/python benchmarks/efficacy.py                       # defaults: about 60 minutes on 2 CPU cores
    .venv/bin/python benchmarks/efficacy.py --budget 2000 --steps 600 --layers 20 --heldout 189   # a GPU machine
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
ARMS = ("seqkd", "seqkd_seed1", "lion", "seqkd_dpo", "lion_dpo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "efficacy", help="Run directory (resumable).")
    p.add_argument("--teacher", default="smollm2-135m-instruct", help="Teacher model (served by vLLM).")
    p.add_argument("--layers", type=int, default=10, help="Student: the teacher depth-pruned to this many layers.")
    p.add_argument("--budget", type=int, default=200, help="Teacher calls for training data per arm.")
    p.add_argument("--steps", type=int, default=60, help="Optimizer steps per arm (batch --batch).")
    p.add_argument("--dpo-share", type=float, default=1 / 3, help="Share of a DPO arm's steps spent on DPO.")
    p.add_argument("--batch", type=int, default=8, help="per_device_train_batch_size.")
    p.add_argument("--lr", type=float, default=5e-4, help="SFT learning rate (the demo's).")
    p.add_argument("--dpo-lr", type=float, default=5e-6, help="DPO learning rate.")
    p.add_argument("--iterations", type=int, default=3, help="Lion iterations K.")
    p.add_argument("--heldout", type=int, default=150, help="Held-out prompts (of 189).")
    p.add_argument("--max-tokens", type=int, default=64, help="Cap on every answer.")
    p.add_argument("--arms", default=",".join(ARMS), help=f"Comma-separated subset of {','.join(ARMS)}.")
    p.add_argument("--concurrency", type=int, default=128, help="Requests in flight per endpoint.")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="vLLM device.")
    return p.parse_args(argv)


# ---- the pipeline -------------------------------------------------------------------------------
def _pool_sample(out: Path, n: int, seed: int) -> Path:
    """n instructions drawn uniformly (without replacement) from the training pool, as a JSONL file."""
    rows = [json.loads(line) for line in (REPO / "data" / "distill" / "pool.jsonl").read_text().splitlines() if line.strip()]
    chosen = random.Random(seed).sample(rows, min(n, len(rows)))
    path = out / f"pool_seed{seed}_{n}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return path


def _sft(args: argparse.Namespace, steps: int, seed: int = 0) -> dict[str, Any]:
    return {"max_steps": max(1, steps), "learning_rate": args.lr, "lr_scheduler_type": "cosine", "warmup_steps": 0.03,
            "per_device_train_batch_size": args.batch, "max_length": 256, "bf16": False, "seed": seed, "logging_steps": 5}


def _dpo(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    return {"max_steps": max(1, steps), "learning_rate": args.dpo_lr, "beta": 0.1, "per_device_train_batch_size": args.batch,
            "max_length": 256, "bf16": False, "logging_steps": 5}


def _answers(args: argparse.Namespace, seed: int = 0) -> dict[str, Any]:
    return {"temperature": 0.7, "max_tokens": args.max_tokens, "seed": seed}


def _eval(name: str, args: argparse.Namespace) -> dict[str, Any]:
    return {"name": name, "type": "eval", "input": "heldout", "gold_column": "gold", "student": "student", "teacher": "teacher",
            "judge": "code:exact_match", "answer_sampling": {"temperature": 0.0, "max_tokens": args.max_tokens}}


def _lion(name: str, args: argparse.Namespace, seeds: str, sft_steps: int, dpo_steps: int | None) -> dict[str, Any]:
    # Budget: half on answering the seeds, half over K iterations of generation; a kept new
    # instruction costs about 2.5 teacher calls here (1.3x oversampling, filters, then its answer).
    per_iteration = max(1, round(args.budget / 2 / args.iterations / 2.5))
    stage = {
        "name": name, "type": "lion", "input": seeds, "heldout": "heldout", "teacher": "teacher", "referee": "code:exact_match",
        "student": "student", "iterations": args.iterations, "tau": 5.0, "new_per_iteration": per_iteration, "hard_fraction": 0.5,
        "max_instruction_chars": 200, "answer_sampling": _answers(args), "heldout_sampling": {"temperature": 0.0, "max_tokens": args.max_tokens},
        "generation_sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 80, "seed": 0},
        "sft": _sft(args, sft_steps // args.iterations),
    }
    if dpo_steps:
        stage["dpo"] = _dpo(args, dpo_steps // args.iterations)
    return stage


def pipeline(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The benchmark as one synthkd pipeline: a floor eval, then each arm's stages."""
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        sys.exit(f"efficacy: unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    student = f"{args.teacher}?layers={args.layers}"
    serve = {"max_model_len": 1024, "cpu_kvcache_gib": 2, "device": args.device}
    dpo_steps = round(args.steps * args.dpo_share)
    stages: list[dict[str, Any]] = [
        {"name": "heldout", "type": "load", "path": str(REPO / "data" / "distill" / "heldout.jsonl"), "limit": args.heldout},
        {"name": "pool0", "type": "load", "path": str(_pool_sample(out, args.budget, 0))},
        {"name": "lion_seeds", "type": "load", "path": str(_pool_sample(out, args.budget // 2, 0))},
        _eval("floor", args),
    ]
    for arm in arms:
        if arm in ("seqkd", "seqkd_seed1", "seqkd_dpo"):
            seed = 1 if arm == "seqkd_seed1" else 0
            pool = "pool0"
            if seed:
                pool = "pool1"
                stages.append({"name": pool, "type": "load", "path": str(_pool_sample(out, args.budget, 1))})
            sft_steps = args.steps - (dpo_steps if arm == "seqkd_dpo" else 0)
            stages += [
                {"name": f"{arm}.answers", "type": "generate", "input": pool, "endpoint": "teacher", "template": "lion/answer.jinja2",
                 "sampling": _answers(args, seed)},
                {"name": f"{arm}.sft", "type": "sft", "input": f"{arm}.answers", "model": student, "serve_as": "student",
                 "sft": _sft(args, sft_steps, seed)},
            ]
            if arm == "seqkd_dpo":
                stages.append({"name": f"{arm}.dpo", "type": "dpo", "input": pool, "teacher": "teacher", "judge": "code:rouge_l",
                               "student": "student", "sources": ["teacher_vs_student"], "margin": 1.0, "iterations": 1,
                               "answer_sampling": _answers(args), "dpo": _dpo(args, dpo_steps)})
            stages.append(_eval(f"{arm}.eval", args))
        else:
            sft_steps = args.steps - (dpo_steps if arm == "lion_dpo" else 0)
            stages.append(_lion(arm, args, "lion_seeds", sft_steps, dpo_steps if arm == "lion_dpo" else None))
    return {
        "name": "efficacy", "description": "synthkd efficacy benchmark (benchmarks/efficacy.py)", "seed": 0,
        "prompts_dir": str(REPO / "prompts"),
        "endpoints": {
            "teacher": {"base_url": None, "model": "teacher", "serve": {"model_path": args.teacher, **serve}, "concurrency": args.concurrency},
            "student": {"base_url": None, "model": "student", "serve": {"model_path": student, **serve}, "concurrency": args.concurrency},
        },
        "stages": stages,
    }


# ---- reading the results ----------------------------------------------------------------------------
def _teacher_use(stage: dict[str, Any], hits: bool = True) -> tuple[int, int]:
    """(teacher calls, completion tokens) a stage spent on training data. Cache hits count as the
    arm's own calls (an earlier arm happened to ask the same), unless they are the arm's own repeats."""
    ep = (stage.get("by_endpoint") or {}).get("teacher", {})
    calls, tokens = int(ep.get("calls", 0)), int(ep.get("completion_tokens", 0))
    if hits:
        calls, tokens = calls + int(ep.get("cache_hits", 0)), tokens + int(ep.get("cached_completion_tokens", 0))
    return calls, tokens


def _steps(run: Path, stage: str) -> int:
    path = run / "checkpoints" / stage / "train_metrics.json"
    return int(json.loads(path.read_text()).get("steps", 0)) if path.is_file() else 0


def collect(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    state = json.loads((run / "run.json").read_text())
    st = state["stages"]
    floor = st["floor"]["eval"]
    results: dict[str, Any] = {"floor": {"figures": floor["student"], "teacher_calls": 0, "completion_tokens": 0, "steps": 0},
                               "teacher": {"figures": floor["teacher"]}}
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        if arm.startswith("seqkd"):
            calls, tokens = _teacher_use(st.get(f"{arm}.answers", {}))
            steps = _steps(run, f"{arm}.sft")
            if arm == "seqkd_dpo":
                c2, t2 = _teacher_use(st.get(f"{arm}.dpo", {}), hits=False)  # its hits are its own answers stage's replies
                calls, tokens = calls + c2, tokens + t2
                its = st.get(f"{arm}.dpo", {}).get("iterations", [])
                steps += sum(int(it["dpo"].get("steps", 0)) for it in its if isinstance(it.get("dpo"), dict))
            ev = st.get(f"{arm}.eval", {}).get("eval")
            figures = ev["student"] if ev else None
            elapsed = sum(st.get(f"{arm}.{k}", {}).get("elapsed_s", 0) for k in ("answers", "sft", "dpo", "eval"))
        else:
            stage = st.get(arm, {})
            calls, tokens = _teacher_use(stage)
            its = stage.get("iterations", [])
            steps = sum(int(it.get("sft", {}).get("steps", 0)) for it in its if isinstance(it.get("sft"), dict))
            steps += sum(int(it["dpo"].get("steps", 0)) for it in its if isinstance(it.get("dpo"), dict))
            figures = its[-1].get("heldout") if its else None
            elapsed = stage.get("elapsed_s", 0)
        results[arm] = {"figures": figures, "teacher_calls": calls, "completion_tokens": tokens, "steps": steps, "elapsed_s": elapsed}
    return results


def _cell(fig: dict[str, Any] | None, key: str, digits: int) -> str:
    if not fig or not isinstance(fig.get(key), dict) or fig[key].get("mean") is None or math.isnan(fig[key]["mean"]):
        return "-"
    m = fig[key]
    return f"{m['mean']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    head = (f"teacher {args.teacher}, student {args.teacher}?layers={args.layers}, {args.heldout} held-out prompts, "
            f"budget {args.budget} teacher calls and {args.steps} steps (batch {args.batch}) per arm; 95% bootstrap intervals\n\n")
    lines = ["| arm | ROUGE-L vs teacher | NLL of teacher answers | gold accuracy | teacher calls | completion tokens | steps | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, r in results.items():
        fig = r.get("figures")
        if arm == "teacher":
            lines.append(f"| teacher (ceiling) | 100 (reference) | {_cell(fig, 'nll', 2)} | {_cell(fig, 'gold_accuracy', 2)} | - | - | - | - |")
            continue
        minutes = f"{r['elapsed_s'] / 60:.1f}" if r.get("elapsed_s") else "-"
        label = "untrained student (floor)" if arm == "floor" else arm
        lines.append(f"| {label} | {_cell(fig, 'rouge_l', 1)} | {_cell(fig, 'nll', 2)} | {_cell(fig, 'gold_accuracy', 2)} | "
                     f"{r['teacher_calls']} | {r['completion_tokens']} | {r['steps']} | {minutes} |")
    return head + "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in results if a not in ("teacher",) and results[a].get("figures")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
    for ax, key, title in zip(axes, ("rouge_l", "nll", "gold_accuracy"), ("ROUGE-L vs teacher", "NLL of teacher answers", "gold accuracy")):
        xs, ys, err = [], [], [[], []]
        for i, arm in enumerate(arms):
            m = results[arm]["figures"].get(key)
            if isinstance(m, dict) and not math.isnan(m["mean"]):
                xs.append(i)
                ys.append(m["mean"])
                err[0].append(m["mean"] - m["ci_low"])
                err[1].append(m["ci_high"] - m["mean"])
        ax.bar(xs, ys, yerr=err, capsize=3, color="#3b75af")
        t = (results["teacher"]["figures"] or {}).get(key)
        if isinstance(t, dict) and key != "rouge_l":
            ax.axhline(t["mean"], linestyle="--", color="#777", label="teacher")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(arms)), arms, rotation=30, fontsize=7)
        ax.set(title=title)
        ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "efficacy.yaml"
    spec.write_text(yaml.safe_dump(pipeline(args, out), sort_keys=False))
    synthkd = Path(sys.executable).parent / "synthkd"
    started = time.monotonic()
    print(f"efficacy: running {spec} into {out / 'run'}", flush=True)
    proc = subprocess.run([str(synthkd), "run", str(spec), "--out", str(out / "run")], env=os.environ.copy())
    if proc.returncode != 0:
        print(f"efficacy: the pipeline stopped with exit code {proc.returncode}; rerun the same command to resume", file=sys.stderr)
        return proc.returncode
    results = collect(out / "run", args)
    wall = time.monotonic() - started
    md = table(results, args) + f"\nwall time {wall / 60:.1f} min (`{' '.join(['benchmarks/efficacy.py', *(argv or sys.argv[1:])])}`)\n"
    (out / "efficacy.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "wall_s": wall}, indent=2))
    (out / "efficacy.md").write_text(md)
    plot(results, out / "efficacy.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
