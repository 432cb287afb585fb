"""YAML reading with YAML 1.2 numbers: `1e-5` is a float (PyYAML's YAML 1.1 makes it a string)."""

from __future__ import annotations

import re
from typing import Any

import yaml


class Loader(yaml.SafeLoader):
    """SafeLoader whose floats include exponent forms without a dot (2e-5, 1E3)."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load(text: str) -> Any:
    """Parse YAML text (one document)."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
