"""One function from a model string to a local directory, used by serving, training and `synthkd train`."""

from __future__ import annotations

from pathlib import Path

from synthkd.errors import ConfigError
from synthkd.models.packaged import PACKAGED, packaged_gguf
from synthkd.models.spec import ModelSpec, parse_model_spec

FORMS = "a directory, a .gguf file, tiny:NAME, " + ", ".join(sorted(PACKAGED)) + ", or a hub name; add ?layers=K (or ?layers=K&by=influence) to depth-prune"


def _source_file(spec: ModelSpec, where: str | None) -> Path | None:
    """The GGUF file a source names (packaged short name or a path), None for other sources."""
    if spec.source in PACKAGED:
        return packaged_gguf(spec.source, where)
    if spec.source.endswith(".gguf"):
        path = Path(spec.source).expanduser()
        if not path.is_file():
            raise ConfigError(f"GGUF file {spec.source} does not exist", where=where, fix=f"give an existing .gguf file ({FORMS})")
        return path
    return None


def check_model_spec(text: str, where: str | None = None) -> None:
    """Cheap checks, at validate time: the spec parses, its file or package exists, pruning has a local source
    and, where the depth is known without loading weights, keeps no more layers than the model has."""
    spec = parse_model_spec(text, where)
    gguf = _source_file(spec, where)
    if gguf is None and not spec.source.startswith("tiny:") and spec.pruned and not Path(spec.source).expanduser().is_dir():
        raise ConfigError(f"cannot depth-prune {spec.source!r}: it is not a local model", where=where,
                          fix=f"prune a local directory, a .gguf file or a packaged model ({FORMS})")
    if spec.layers is not None:
        total = _depth(spec, gguf)
        if total is not None:
            from synthkd.models.prune import check_layers

            check_layers(total, spec.layers, where)


def _depth(spec: ModelSpec, gguf: Path | None) -> int | None:
    """The source model's layer count, where it is known without loading (or building) weights."""
    if gguf is not None:
        from synthkd.models.gguf import block_count

        return block_count(gguf)
    if spec.source.startswith("tiny:"):
        from synthkd.serve.tiny import tiny_layers

        return tiny_layers(spec.source.split(":", 1)[1])
    config = Path(spec.source).expanduser() / "config.json"
    if not config.is_file():
        return None
    from synthkd.models.prune import num_layers

    try:
        return num_layers(config.parent)
    except (ValueError, TypeError, OSError, ConfigError):
        return None  # an odd config: the pruning step itself reports it


def resolve_model(text: str, home: Path, corpus_root: Path, where: str | None = None) -> str:
    """A directory (or hub name) transformers and vLLM can load, building or converting it once if needed."""
    spec = parse_model_spec(text, where)
    gguf = _source_file(spec, where)
    if gguf is not None:
        from synthkd.models.gguf import converted_dir

        base = str(converted_dir(home, gguf))
    elif spec.source.startswith("tiny:"):
        from synthkd.serve.tiny import tiny_model_dir

        base = str(tiny_model_dir(home, corpus_root, spec.source.split(":", 1)[1]))
    else:
        base = spec.source
    if not spec.pruned:
        return base
    if not Path(base).is_dir():
        raise ConfigError(f"cannot depth-prune {spec.source!r}: it is not a local model", where=where, fix=f"use {FORMS}")
    from synthkd.models.prune import pruned_dir

    assert spec.layers is not None
    return str(pruned_dir(home, Path(base), spec.layers, where, by=spec.by))
