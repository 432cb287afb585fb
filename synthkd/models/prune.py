"""Depth pruning: a smaller student of the same family, made by keeping some of a model's layers.

Layers are kept whole (attention, MLP and their norms), renumbered in order; embeddings, the final
norm and the LM head are kept as they are. `evenly_spaced(n, k)` keeps the first and the last layer
and spreads the rest evenly, the usual starting point for layer-dropping students; `by=influence`
keeps the layers that change their input most (`influence.py`). The result is cached by (source
fingerprint, kept layers), so the same request always gives the same weights.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from synthkd.errors import ConfigError
from synthkd.models.store import ModelCard, build_once, read_card, save_weights, weights_fingerprint, write_marker

PRUNER_VERSION = "1"
_LAYER_KEY = re.compile(r"^(.*?\.(?:layers|h|blocks)\.)(\d+)(\..*)$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


def evenly_spaced(total: int, keep: int) -> tuple[int, ...]:
    """`keep` of `total` layer indices, first and last included, the rest as evenly spaced as rounding allows."""
    if not 1 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} layers")
    if keep == 1:
        return (0,)
    return tuple(round(i * (total - 1) / (keep - 1)) for i in range(keep))


def num_layers(model_dir: Path) -> int:
    import json

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if key in cfg:
            return int(cfg[key])
    raise ConfigError(f"{model_dir}: config.json has no layer count", fix="depth pruning needs a decoder model with num_hidden_layers")


def kept_layers(model_dir: Path, layers: int | tuple[int, ...], where: str | None = None) -> tuple[int, ...]:
    return check_layers(num_layers(model_dir), layers, where)


def check_layers(total: int, layers: int | tuple[int, ...], where: str | None = None) -> tuple[int, ...]:
    """The layer indices `?layers=` keeps of a `total`-layer model; ConfigError when it asks for more than there are."""
    if isinstance(layers, int):
        if layers > total:
            raise ConfigError(f"cannot keep {layers} layers of a {total}-layer model", where=where, fix=f"use layers=1..{total}")
        return evenly_spaced(total, layers)
    if layers[-1] >= total:
        raise ConfigError(f"layer {layers[-1]} does not exist in a {total}-layer model", where=where, fix=f"use indices 0..{total - 1}")
    return layers


def pruned_dir(home: Path, source_dir: Path, layers: int | tuple[int, ...], where: str | None = None, by: str = "spacing") -> Path:
    """The pruned model directory, built on first use. `by` turns a count of layers into indices: "spacing" (evenly
    spaced) or "influence" (the most influential layers, measured once on the calibration text)."""
    source_fp = weights_fingerprint(str(source_dir))
    keep = kept_layers(source_dir, layers, where)  # also checks a count against the model's depth
    selection = "evenly spaced" if isinstance(layers, int) else "explicit"
    influence: list[float] | None = None
    if isinstance(layers, int) and by == "influence":
        from synthkd.models.influence import influence_scores, most_influential

        influence = influence_scores(home, source_dir, source_fp)
        keep, selection = most_influential(influence, layers), "block influence"
    target = home / "models" / f"pruned-{source_fp}-L{'_'.join(map(str, keep))}-v{PRUNER_VERSION}"
    if len(target.name) > 120:  # long explicit lists: keep the name short, the card has the list
        import hashlib
        target = home / "models" / f"pruned-{source_fp}-{hashlib.sha256(str(keep).encode()).hexdigest()[:12]}-v{PRUNER_VERSION}"
    return build_once(target, lambda tmp: _prune(source_dir, keep, tmp, source_fp, selection, influence))


def _prune(source_dir: Path, keep: tuple[int, ...], out: Path, source_fp: str, selection: str, influence: list[float] | None) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    source = AutoModelForCausalLM.from_pretrained(str(source_dir), dtype=torch.float32)
    total = source.config.num_hidden_layers
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, tensor in source.state_dict().items():
        m = _LAYER_KEY.match(key)
        if m is None:
            state[key] = tensor
        elif int(m.group(2)) in new_index:
            state[f"{m.group(1)}{new_index[int(m.group(2))]}{m.group(3)}"] = tensor
    config = AutoConfig.from_pretrained(str(source_dir))
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds follow their layers
        config.layer_types = [config.layer_types[i] for i in keep]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    save_weights(model, state, out, f"pruning {source_dir}")
    for name in _TOKENIZER_FILES:
        if (source_dir / name).is_file():
            shutil.copy2(source_dir / name, out / name)
    before = sum(p.numel() for p in source.parameters())
    after = sum(p.numel() for p in model.parameters())
    card = ModelCard(kind="depth_pruned", source=str(source_dir), source_fingerprint=source_fp,
                     source_card=read_card(source_dir), layers_total=total, layers_kept=list(keep),
                     parameters_source=before, parameters=after, selection=selection)
    if influence is not None:
        card["influence"] = influence
    write_marker(out, f"pruned:{source_fp}:{','.join(map(str, keep))}:v{PRUNER_VERSION}", card)
