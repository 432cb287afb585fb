"""One training process under `accelerate launch`: `python -m synthkd.train.worker OUT.launch/job.json`.

Every process reads the same job spec and rows (written by `synthkd.train.launch`) and calls
`train_sft` / `train_dpo` / `train_classifier`; the trainer (for the classifier, its own loop) shards the
batches across processes, and only the main process writes the checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from synthkd.jsonl import read_jsonl
from synthkd.records import TrainMetrics
from synthkd.train.examples import JobSpec


def run_job(spec: JobSpec) -> TrainMetrics:
    """Train as the spec says, in this process (one of the launched ones)."""
    rows = read_jsonl(spec["rows"])  # the training columns of each row, as `launch.write_job` wrote them
    lora, seed, fingerprint = spec["lora"], int(spec["seed"]), spec["fingerprint"]
    out_dir = Path(spec["out_dir"])
    if spec["kind"] == "sft":
        from synthkd.train.sft import train_sft

        return train_sft(rows, spec["base_model"], out_dir, sft_args=spec["trainer_args"], freeze_embeddings=bool(spec.get("freeze_embeddings")),
                         freeze_layers=int(spec.get("freeze_layers", 0)),
                         lora=lora, seed=seed, fingerprint=fingerprint)
    if spec["kind"] == "dpo":
        from synthkd.train.dpo import train_dpo

        return train_dpo(rows, spec["base_model"], out_dir, dpo_args=spec["trainer_args"], evaluate_before=bool(spec.get("evaluate_before")),
                         lora=lora, seed=seed, fingerprint=fingerprint)
    if spec["kind"] == "classifier":
        from synthkd.skd.critic import ClassifierArgs, train_from_args

        return train_from_args(rows, spec["base_model"], out_dir, ClassifierArgs.model_validate(spec["classifier"]), seed=int(spec["seed"]),
                               fingerprint=spec["fingerprint"], distributed=True)
    raise ValueError(f"unknown training kind {spec['kind']!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m synthkd.train.worker JOB.json (run by `accelerate launch`; see synthkd.train.launch)", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    metrics = run_job(spec)
    from accelerate import PartialState

    state = PartialState()  # the state the trainer set up
    # One line per process; tests and users read "world size N" in the log.
    print(f"synthkd.train.worker: process {state.process_index} of world size {state.num_processes} "
          f"({state.distributed_type.value}, backend {state.backend}): {json.dumps(metrics.to_json())}", flush=True)
    state.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
