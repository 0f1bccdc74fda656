"""The package's layering, read from the source: no import cycle among the engine's modules, and lower layers
never import higher ones (iep/static draws nothing; iep/interpret draws)."""

import ast
import os

from tests.conftest import ROOT

PACKAGE_DIRS = {"iep": "iep", "iep.nets": "nets", "iep.datasets": "datasets", "iep.op_utils": "op_utils"}


def _modules() -> dict[str, str]:
    """module name → file, for every module of the installed package."""
    out = {}
    for package, folder in PACKAGE_DIRS.items():
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, name), os.path.join(ROOT, folder))[:-3]
                    parts = [p for p in rel.split(os.sep) if p != "__init__"]
                    out[".".join([package, *parts])] = os.path.join(dirpath, name)
    return out


def _imports(path: str) -> set[str]:
    """Every `iep...` module a file imports, at any depth of the file (function-level imports count)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("iep"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("iep"))
    return found


def _graph(prefix: str) -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {m for m in _imports(path) if m in modules and m.startswith(prefix) and m != name}
        for name, path in modules.items()
        if name.startswith(prefix)
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_engine_has_no_import_cycle():
    graph = _graph("iep.engine.")
    assert "iep.engine.trainer" in graph and graph["iep.engine.runs"]  # the walk sees real modules and edges
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_a_cycle_is_found_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_static_knowledge_does_not_import_the_interpret_layer():
    modules = _modules()
    static = {name: _imports(path) for name, path in modules.items() if name.startswith("iep.static")}
    assert static
    upward = {name: sorted(m for m in found if m.startswith("iep.interpret")) for name, found in static.items()}
    assert not any(upward.values()), upward


def test_baselines_take_shared_pieces_from_the_engine_and_op_utils_not_from_iep():
    """The clipped gradient, the shared losses and the module decay live in iep/engine and op_utils; a baseline
    may reuse IEP's learned modules (MHGD's heads, IEP's points, adapters: the same methods' modules), nothing
    else of iep/procedure."""
    allowed = {"iep.procedure.black_box", "iep.procedure.points", "iep.procedure.adapters"}
    modules = _modules()
    found = {
        name: sorted(m for m in _imports(path) if m.startswith("iep.procedure") and m.rsplit(".", 1)[0] not in allowed
                     and m not in allowed)
        for name, path in modules.items()
        if name.startswith("iep.baselines")
    }  # fmt: skip
    assert any(_imports(p) for n, p in modules.items() if n.startswith("iep.baselines"))
    assert not any(found.values()), found
