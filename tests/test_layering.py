"""The import map points one way: plain config at the bottom, stage types above it, the pipeline on top.

Read from the source (every import, including those inside functions; `if TYPE_CHECKING:` blocks are
annotations only and left out), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "synthkd"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    raw: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            raw.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            raw.add(node.module)
            raw.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = set()
    for target in raw:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(path, name, known) for name, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(component)
    return out


def test_the_only_import_cycles_are_a_method_stage_and_its_loop():
    for component in _cycles(_graph()):
        packages = {name.rpartition(".")[0] for name in component}
        stems = {name.rpartition(".")[2] for name in component}
        assert len(packages) == 1 and stems == {"stage", "loop"}, f"import cycle: {sorted(component)}"


def test_configs_import_no_stage_implementation():
    graph = _graph()
    configs = [name for name in graph if name.startswith("synthkd.config") or name.endswith(".config")]
    assert "synthkd.lion.config" in configs and "synthkd.config.stages" in configs
    implementations = {name for name in graph if name.startswith("synthkd.stages") or name.endswith((".stage", ".loop"))}
    for name in configs:
        below = set()
        todo = [name]
        while todo:  # everything a config imports, directly or not
            for target in graph[todo.pop()]:
                if target not in below:
                    below.add(target)
                    todo.append(target)
        assert not below & implementations, f"{name} imports {sorted(below & implementations)}"
        assert "synthkd.pipeline" not in below, f"{name} imports the pipeline above it"


def test_the_cycle_finder_finds_a_cycle():
    # The checks above pass on a graph without cycles; make sure they would see one.
    graph = {"a.x": {"a.y"}, "a.y": {"b.z"}, "b.z": {"a.x"}, "c": {"a.x"}}
    assert _cycles(graph) == [{"a.x", "a.y", "b.z"}]


def test_stages_write_to_disk_only_through_their_outlet():
    # One road to disk: the runner writes a stage's main output and run.json entry, the stage's outlet everything
    # else; no stage module calls the runtime's writer or touches run.json itself.
    offenders = []
    for name, path in _modules().items():
        if name in ("synthkd.runtime", "synthkd.runner", "synthkd.stages.outlet"):
            continue
        text = path.read_text()
        for needle in (".write_dataset(", "rt.state", "save_iteration("):
            if needle in text:
                offenders.append(f"{name}: {needle}")
    assert not offenders, offenders
