"""Parse a model string: `SOURCE[?layers=K|i,j,...][&by=spacing|influence]`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from synthkd.errors import ConfigError

SPEC_HELP = ("write SOURCE, SOURCE?layers=K (keep K layers, evenly spaced), SOURCE?layers=K&by=influence (keep the K layers "
             "that change their input most) or SOURCE?layers=0,5,9 (keep those layers)")
BY = ("spacing", "influence")


@dataclass(frozen=True)
class ModelSpec:
    """A model source plus an optional depth-pruning request."""

    source: str
    layers: int | tuple[int, ...] | None = None  # a count or explicit 0-based indices
    by: str = "spacing"  # how a count is turned into layers: evenly spaced, or by block influence (models/influence.py)

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
    unknown = sorted(set(params) - {"layers", "by"})
    repeated = [k for k, v in params.items() if len(v) != 1]
    if unknown or repeated or len(params.get("layers", [])) != 1:
        raise ConfigError(f"model {text!r}: unknown or repeated option(s) {', '.join(unknown + repeated) or 'layers'}", where=where,
                          fix=SPEC_HELP)
    by = params.get("by", ["spacing"])[0].strip()
    if by not in BY:
        raise ConfigError(f"model {text!r}: by={by!r} is not one of {', '.join(BY)}", where=where, fix=SPEC_HELP)
    raw = params["layers"][0].strip()
    try:
        if "," in raw:
            indices = tuple(int(x) for x in raw.split(","))
            if any(i < 0 for i in indices) or len(set(indices)) != len(indices) or list(indices) != sorted(indices):
                raise ValueError
            if "by" in params:
                raise ConfigError(f"model {text!r}: by= chooses among a count of layers, and layers= lists them", where=where,
                                  fix="give layers=K with by=, or the list alone")
            return ModelSpec(source, indices)
        count = int(raw)
        if count < 1:
            raise ValueError
        return ModelSpec(source, count, by)
    except ValueError:
        raise ConfigError(f"model {text!r}: layers={raw!r} is not a positive count or increasing distinct indices",
                          where=where, fix=SPEC_HELP) from None
