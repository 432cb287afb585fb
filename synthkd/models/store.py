"""Content-addressed model directories under SYNTHKD_HOME/models, built once, atomically."""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypedDict

if TYPE_CHECKING:
    import torch

FINGERPRINT_FILE = "synthkd_fingerprint.txt"  # read by serve.fingerprint() and train.common
MODEL_CARD_FILE = "synthkd_model.json"  # how synthkd made these weights (source, kept layers, parameters)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, built by `build(tmp_dir)` on first use; concurrent callers wait for one builder."""
    if (target / FINGERPRINT_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / FINGERPRINT_FILE).is_file():
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)  # a half-written directory from a crash
            build(tmp)
            tmp.rename(target)
    return target


class ModelCard(TypedDict, total=False):
    """synthkd_model.json: how synthkd made a set of weights (a GGUF conversion, or a depth-pruned copy of another)."""

    kind: str  # gguf | depth_pruned
    source: str
    sha256: str  # gguf: the file's digest
    source_fingerprint: str  # depth_pruned: the source weights' identity
    source_card: "ModelCard"  # depth_pruned: the source's own card ({} where it has none)
    layers_total: int
    layers_kept: list[int]
    parameters_source: int
    parameters: int
    selection: str  # depth_pruned: how the layers were chosen (explicit | evenly spaced | block influence)
    influence: list[float]  # depth_pruned by influence: every source layer's block influence


def save_weights(model: Any, state: dict[str, "torch.Tensor"], out: Path, what: str) -> None:
    """Load `state` into a freshly built `model`, check every key matched, tie embeddings, save to `out`."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings: the LM head may be absent from the state dict; anything else missing is a bug.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"{what}: missing {missing}, unexpected {unexpected}")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True)


def write_marker(out: Path, fingerprint: str, card: ModelCard) -> None:
    """Write the model card and, last, the fingerprint (its presence means the directory is whole)."""
    (out / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2))
    (out / FINGERPRINT_FILE).write_text(fingerprint)


def read_card(path: Path) -> ModelCard:
    """The model card synthkd wrote beside weights it made, or {}."""
    card = Path(path) / MODEL_CARD_FILE
    return json.loads(card.read_text()) if card.is_file() else {}


def weights_fingerprint(path: str) -> str:
    """Identity of a set of weights: the fingerprint file synthkd wrote beside them, else names and sizes."""
    import hashlib

    p = Path(path)
    marker = p / FINGERPRINT_FILE
    if marker.is_file():
        return hashlib.sha256(marker.read_bytes()).hexdigest()[:16]
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(p.iterdir()):
            if f.is_file():
                h.update(f"{f.name}:{f.stat().st_size}".encode())
        return h.hexdigest()[:16]
    return hashlib.sha256(path.encode()).hexdigest()[:16]  # a hub name
