"""A `.gguf` file -> a plain transformers directory (config, float32 weights, tokenizer, chat template).

transformers dequantizes GGUF on load, but the loaded config keeps `quantization_config` and then
refuses `save_pretrained`; so the weights are moved into a fresh model built from the config without
that key. The result is cached under SYNTHKD_HOME/models/gguf-<sha256 of the file>, so it is
converted once per machine and its identity follows the file's content, not its path.
"""

from __future__ import annotations

from pathlib import Path

from synthkd.models.store import build_once, save_weights, write_marker

CONVERTER_VERSION = "1"


def gguf_digest(path: Path) -> str:
    """sha256 of the GGUF file (its converted directory's identity)."""
    from synthkd.runtime import file_digest

    return file_digest(path)


def converted_dir(home: Path, path: Path) -> Path:
    """The converted directory for a GGUF file, converting it on first use (safe against concurrent builders)."""
    sha = gguf_digest(path)
    target = home / "models" / f"gguf-{sha[:16]}-v{CONVERTER_VERSION}"
    return build_once(target, lambda tmp: _convert(path, tmp, sha))


def _convert(path: Path, out: Path, sha: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line in synthkd's log, not a tensor-by-tensor bar
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    config_dict = {k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config", "_name_or_path")}
    config = AutoConfig.for_model(**config_dict)
    config.architectures = [type(loaded).__name__]
    model = type(loaded)(config)
    save_weights(model, loaded.state_dict(), out, f"GGUF conversion of {path}")
    tokenizer.save_pretrained(str(out))
    write_marker(out, f"gguf:{sha}:v{CONVERTER_VERSION}", {"source": str(path), "sha256": sha, "kind": "gguf",
                                                            "parameters": sum(p.numel() for p in model.parameters())})
