"""YAML reading with YAML 1.2 numbers: `1e-5` is a float (PyYAML's YAML 1.1 makes it a string).

What a plain `yaml.safe_load` lets through silently or slowly is refused before anything is built:
a key written twice in one mapping (the second would replace the first, e.g. a second `stages:`),
aliases that expand to more than `MAX_NODES` values (a "billion laughs" document takes seconds and
gigabytes to walk once expanded), an alias inside its own anchor (an endless structure), and
nesting deeper than Python's recursion allows.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# Values in the document once every alias is expanded; a pipeline has a few hundred.
MAX_NODES = 100_000


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


class RefusedYAML(yaml.YAMLError):
    """Well-formed YAML that is refused: `problem` says what, `line` (1-based) where, `fix` how to fix it."""

    def __init__(self, problem: str, line: int | None, fix: str) -> None:
        self.problem, self.line, self.fix = problem, line, fix
        super().__init__(f"line {line}: {problem}" if line else problem)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _check_keys(node: yaml.MappingNode) -> None:
    """No scalar key twice in one mapping (merge keys `<<` aside)."""
    seen: dict[tuple[str, str], yaml.Node] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        first = seen.setdefault((key.tag, key.value), key)
        if first is not key:
            raise RefusedYAML(f"duplicate key {key.value!r} (first at line {_line(first)}); the second would silently replace the first",
                              _line(key), "keep one of the two (merge their contents into one)")


def _check(root: yaml.Node) -> None:
    """Duplicate keys, recursive aliases and the expanded size, without expanding anything.

    An alias is the same node object as its anchor, so each node's expanded size is computed once.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise RefusedYAML("an alias refers to its own anchor (an endless structure)", _line(node),
                              "replace the alias with the values it should stand for")
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            _check_keys(node)
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        open_nodes.discard(id(node))
        if total > MAX_NODES:
            raise RefusedYAML(f"anchors and aliases expand to more than {MAX_NODES} values", _line(node),
                              "write the values out instead of nesting aliases of aliases")
        sizes[id(node)] = total
        return total

    size(root)


def load(text: str) -> Any:
    """Parse YAML text (one document); raises yaml.YAMLError (RefusedYAML for the cases above)."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node)
        return loader.construct_document(node)
    except RecursionError:
        raise RefusedYAML("the YAML is nested too deeply", None, "flatten the nesting") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. `!!int epochs`: PyYAML's constructors raise these
        raise RefusedYAML(f"a value cannot be read as the type its tag names ({exc})", None,
                          "remove the !!tag or fix the value") from None
    finally:
        loader.dispose()
