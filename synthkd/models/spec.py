"""Parse a model string: `SOURCE[?layers=K|i,j,...]`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from synthkd.errors import ConfigError

SPEC_HELP = "write SOURCE or SOURCE?layers=K (keep K layers, evenly spaced) or SOURCE?layers=0,5,9 (keep those layers)"


@dataclass(frozen=True)
class ModelSpec:
    """A model source plus an optional depth-pruning request."""

    source: str
    layers: int | tuple[int, ...] | None = None  # a count (evenly spaced) or explicit 0-based indices

    @property
    def pruned(self) -> bool:
        return self.layers is not None


def parse_model_spec(text: str, where: str | None = None) -> ModelSpec:
    """`smollm2-135m-instruct?layers=10` -> ModelSpec('smollm2-135m-instruct', 10). Raises ConfigError."""
    source, _, query = text.partition("?")
    source = source.strip()
    if not source:
        raise ConfigError(f"model {text!r} names no source", where=where, fix=SPEC_HELP)
    if not query:
        return ModelSpec(source)
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - {"layers"})
    if unknown or len(params.get("layers", [])) != 1:
        raise ConfigError(f"model {text!r}: unknown or repeated option(s) {', '.join(unknown) or 'layers'}", where=where, fix=SPEC_HELP)
    raw = params["layers"][0].strip()
    try:
        if "," in raw:
            indices = tuple(int(x) for x in raw.split(","))
            if any(i < 0 for i in indices) or len(set(indices)) != len(indices) or list(indices) != sorted(indices):
                raise ValueError
            return ModelSpec(source, indices)
        count = int(raw)
        if count < 1:
            raise ValueError
        return ModelSpec(source, count)
    except ValueError:
        raise ConfigError(f"model {text!r}: layers={raw!r} is not a positive count or increasing distinct indices",
                          where=where, fix=SPEC_HELP) from None
