"""Seconds per SFT step on this machine: TRL's trainer as shipped against synthkd's CPU loss path.

    .venv/bin/python benchmarks/sft_step.py [--model smollm2-135m-instruct?layers=10] [--steps 20] [--batch 8]

TRL 1.x computes the loss through a tiled "fused LM head" that scores only the answer tokens (and logs entropy and
token accuracy); synthkd's `train_sft` uses the model's own NLL on a machine without a GPU (synthkd/train/sft.py),
with the output head run on the answer positions only (synthkd/models/heads.py); the middle line is that path with
the head over every position, as it was before. All three train the same student on the same 160 short instruction/answer pairs (the distill pool's instructions with a
templated one-sentence answer; the text does not change the step time much) with answer-only loss, in separate
processes, and the script prints each one's seconds per step and final training loss (the two must agree).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _rows(n: int) -> list[dict]:
    pool = [json.loads(line) for line in (REPO / "data/distill/pool.jsonl").read_text().splitlines()[:n]]
    return [{"messages": [{"role": "user", "content": r["instruction"]},
                          {"role": "assistant", "content": f"The answer is {r.get('gold') or 'a short one'}, as the question asks."}]}
            for r in pool]


def _one(path: str, steps: int, batch: int, child: str) -> None:
    """In a child process: train and print (seconds per step, loss) as JSON."""
    from synthkd.models.resolve import resolve_model
    from synthkd.settings import Settings
    import synthkd.models.heads as heads
    import synthkd.train.sft as sft

    fused = child == "fused"
    if child == "cpu-full":  # the CPU path with the output head over every position, as before synthkd.models.heads
        heads.answer_head = lambda *a, **k: None  # type: ignore[assignment]
    if fused:  # TRL's own trainer, as `train_sft` used before the CPU path
        from trl import SFTTrainer

        sft._trainer_class = lambda config: SFTTrainer  # type: ignore[assignment]
    base = resolve_model(path, Settings.from_environ().home, REPO)
    args = {"max_steps": steps, "learning_rate": 5e-4, "lr_scheduler_type": "cosine", "per_device_train_batch_size": batch,
            "max_length": 256, "completion_only_loss": True, "logging_steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = sft.train_sft(_rows(160), base, Path(tmp) / "out", sft_args=args, lora=None, seed=0, fingerprint="bench")
        took = time.perf_counter() - start
    print(json.dumps({"s_per_step": took / steps, "loss": metrics.train_loss}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct?layers=10")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--child", choices=["fused", "cpu-full", "cpu"])
    a = ap.parse_args()
    if a.child:
        _one(a.model, a.steps, a.batch, a.child)
        return
    print(f"{a.model}: {a.steps} steps of {a.batch} examples, answer-only loss (seconds per step include loading and saving)")
    for child in ("fused", "cpu-full", "cpu"):
        out = subprocess.run([sys.executable, __file__, "--child", child, "--model", a.model, "--steps", str(a.steps),
                              "--batch", str(a.batch)], capture_output=True, text=True, check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        what = {"fused": "TRL fused LM head          ", "cpu-full": "model's own loss, all logits",
                "cpu": "synthkd CPU path            "}[child]
        print(f"  {what}: {got['s_per_step']:.2f} s/step, train loss {got['loss']:.4f}")


if __name__ == "__main__":
    main()
