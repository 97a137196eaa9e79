"""The shape of ``mlalp_core``: no import cycle, no module over 500 lines.

The import graph is read from the source (the AST of every module), not from ``sys.modules``, so
imports inside functions and under ``if TYPE_CHECKING:`` count: a lazy import ties two modules
as firmly as one at the top (it only moves the failure to the first call). The rule:

- A node is a module; a package is the node of its ``__init__.py``.
- ``import a.b.c`` and ``from a.b.c import name`` are edges to ``a.b.c``; ``from a.b import c``
  is an edge to the module ``a.b.c`` when there is one, else to ``a.b`` (the name comes from the
  package's ``__init__``: a re-exported name depends on the package, which depends on the module
  that defines it). Relative imports are resolved against the importing module's package.
- Importing ``a.b.c`` also runs the ``__init__`` of the packages above it, so those packages are
  edges too, except the importer's own packages: Python has initialised those before the
  importer, whatever it imports. A package re-exporting its submodules (``pkg -> pkg.sub``) is
  therefore fine; a submodule importing a name from its own package's ``__init__``
  (``from . import NAME``) is an edge back to the package, as it should be.
- Lazy imports by name count: ``importlib.import_module("a.b")`` with a literal, and any string
  constant that spells a whole module of the package (``"mlalp_core.attacks"``: a table of
  imports done later, such as the notebook API's). A call to ``import_module`` with a computed
  name in a module without such constants fails the test: the walk could not see its targets.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mlalp_core"
MAX_LINES = 500


def _module_files() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` -> ``["a.b", "a"]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _resolve_relative(importer: str, is_package: bool, module: str | None, level: int) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _is_import_module_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "import_module") or \
        (isinstance(f, ast.Name) and f.id in ("import_module", "__import__"))


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every module of the package that ``name`` imports (see the rule in the docstring)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    pkg = _is_package(path)
    named_by_strings = False
    computed_import = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or "" if node.level == 0 else _resolve_relative(name, pkg, node.module, node.level)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in modules else base
        elif _is_import_module_call(node):
            assert isinstance(node, ast.Call)
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value
            else:
                computed_import = True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
            named_by_strings = True
            yield node.value
    if computed_import and not named_by_strings:
        raise AssertionError(f"{path}: import_module with a computed name and no string constant naming "
                             f"its modules; the architecture test cannot see what it imports")


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it depends on."""
    modules = _module_files()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = {name, *_ancestors(name)}
        deps: set[str] = set()
        for target in _imports(name, path, modules):
            if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                continue
            if target in modules and target != name:
                deps.add(target)  # named by the import: an edge even to the importer's own package
            deps.update(t for t in _ancestors(target) if t in modules and t not in own)  # run on the way
        graph[name] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one cycle
    through some of its modules, plus the size of the component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of a component (breadth-first within it)."""
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def describe_cycles(graph: dict[str, set[str]]) -> list[str]:
    return [f"{len(c)} modules tied: {', '.join(c)}\n  e.g. " + " -> ".join(_one_cycle(graph, c))
            for c in find_cycles(graph)]


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    """The walk finds imports inside functions, relative ones, ``from . import submodule`` and the
    notebook API's table of lazy imports (a graph that missed them would pass any package)."""
    g = import_graph()
    assert "mlalp_core.settings" in g["mlalp_core.device"]  # inside device_choice
    assert "mlalp_core.lp.structured" in g["mlalp_core.lp"]  # inside _solve_linf
    assert "mlalp_core.models.demo" in g["mlalp_core.models.registry"]  # from . import demo, in a function
    assert "mlalp_core.models" in g["mlalp_core.models.registry"]  # from . import BUILTIN_NAMES
    assert "mlalp_core.attacks" in g["mlalp_core"]  # the notebook API's table
    assert "mlalp_core.lp" in g["mlalp_core.attacks.mlalp"]  # a package above the module imported
    assert "mlalp_core.attacks" not in g["mlalp_core.attacks.mlalp"]  # its own package: no edge


def test_find_cycles_reports_a_cycle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(g) == [["a", "b", "c"]]
    assert describe_cycles(g) == ["3 modules tied: a, b, c\n  e.g. a -> b -> c -> a"]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    cycles = describe_cycles(import_graph())
    if cycles:
        pytest.fail("import cycles in mlalp_core (imports inside functions count):\n" + "\n".join(cycles))


def test_no_module_over_500_lines() -> None:
    long = {name: n for name, path in _module_files().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"
