"""Which layers a depth-pruned student keeps, by block influence (ShortGPT, Men et al. 2024).

A layer's block influence is how much it turns its input: one minus the cosine similarity of the
hidden state before and after it, averaged over the tokens of a calibration text. A layer that
barely turns the residual stream can go with the least loss; keeping the K most influential layers
(instead of K evenly spaced ones, or a fixed block) is what `?layers=K&by=influence` asks for.

Measured on SmolLM2-135M-Instruct (30 layers, README: Depth pruning): the least influential
layers are 12-17 and 3-6, and a 20-layer student that drops them ends one imitation epoch at
held-out gold 0.27 where the demo's earlier cut (dropping the block 16-25, which holds layers 20,
23 and 24, among the most influential) ended at 0.12.

The scores are computed once per source model (and calibration version) and cached beside the
models, so every build of the same request keeps the same layers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from synthkd.models.calibration import CALIBRATION_VERSION, EXCHANGES

INFLUENCE_VERSION = "1"


def most_influential(scores: Sequence[float], keep: int) -> tuple[int, ...]:
    """The indices of the `keep` layers with the highest influence, in layer order; ties keep the earlier layer. Pure."""
    if not 1 <= keep <= len(scores):
        raise ValueError(f"cannot keep {keep} of {len(scores)} layers")
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return tuple(sorted(ranked[:keep]))


def calibration_texts(tokenizer: object) -> list[str]:
    """The calibration exchanges as the model reads them: through its chat template where it has one."""
    template = getattr(tokenizer, "chat_template", None)
    texts = []
    for question, answer in EXCHANGES:
        if template:
            msgs = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            texts.append(str(tokenizer.apply_chat_template(msgs, tokenize=False)))  # type: ignore[attr-defined]
        else:
            texts.append(f"{question}\n{answer}")
    return texts


def measure(model_dir: Path) -> list[float]:
    """Block influence of every layer of the model in `model_dir`, on the calibration text (float32, CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    layers = int(model.config.num_hidden_layers)
    total = torch.zeros(layers, dtype=torch.float64)
    texts = calibration_texts(tokenizer)
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states  # embeddings, then after each layer
            for i in range(layers):
                cos = torch.nn.functional.cosine_similarity(hidden[i][0], hidden[i + 1][0], dim=-1)
                total[i] += float((1.0 - cos).mean())
    return [round(float(x) / len(texts), 6) for x in total]


def influence_scores(home: Path, source_dir: Path, source_fp: str) -> list[float]:
    """The source model's per-layer block influence, measured on first use and cached under `home/models`."""
    path = home / "models" / f"influence-{source_fp}-c{CALIBRATION_VERSION}-v{INFLUENCE_VERSION}.json"
    if path.is_file():
        try:
            scores = json.loads(path.read_text())["scores"]
            if isinstance(scores, list) and all(isinstance(x, (int, float)) for x in scores):
                return [float(x) for x in scores]
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache file: measure again (it is cheap and deterministic)
    scores = measure(source_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"source": str(source_dir), "calibration": CALIBRATION_VERSION, "scores": scores}, indent=1))
    os.replace(tmp, path)  # atomic: a concurrent builder reads a whole file or none
    return scores
