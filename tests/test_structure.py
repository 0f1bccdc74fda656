"""The package's layering, read from the source: no import cycle anywhere in the package, and no module imports a
layer above its own (LAYERS: the foundation every method builds on, the methods, the loop, the commands)."""

import ast
import functools
import os

from tests.conftest import ROOT

PACKAGE_DIRS = {"iep": "iep", "iep.nets": "nets", "iep.datasets": "datasets", "iep.op_utils": "op_utils"}


@functools.cache
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
    """Every `iep...` module a file imports, at any depth of the file (function-level imports count):
    `from a.b import c` imports the module `a.b.c` when there is one (a submodule), else `a.b` (a name in it)."""
    modules = _modules()
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("iep"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
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


# Lowest first; a module is in the layer of the longest prefix that names it.
LAYERS = (
    # the foundation: the Distiller base, the clipped multi-task gradient, the registry (it imports methods by
    # module path on first use), networks, data, ops, files
    ("foundation", ("iep.core", "iep.methods", "iep.nets", "iep.datasets", "iep.op_utils")),
    ("methods", ("iep.procedure", "iep.baselines", "iep.static")),
    ("loop", ("iep.engine", "iep.keras_fit", "iep.transfer", "iep.interpret")),
    ("commands", ("iep.apps", "iep.demo", "iep.static.learn", "iep")),
)


def _layer(module: str) -> int:
    matches = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is in no layer of tests/test_structure.py's LAYERS"
    return max(matches)[1]


def test_the_package_has_no_import_cycle():
    graph = _graph("iep")
    assert "iep.engine.trainer" in graph and graph["iep.core.registry"]  # the walk sees real modules and edges
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_no_module_imports_a_layer_above_its_own():
    graph = _graph("iep")
    upward = sorted(
        f"{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for name, targets in graph.items()
        for target in targets
        if _layer(target) > _layer(name)
    )
    assert {_layer("iep.core.distiller"), _layer("iep.static.learn"), _layer("iep.baselines.crd")} == {0, 1, 3}
    assert not upward, "\n".join(upward)


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
