"""What mlalp imports is what it declares: the newcomer's runtime-only install must not miss a
module that the test install happens to bring in (highspy came only through cvxpy once).

pyproject.toml declares the runtime dependencies; requirements.txt names each of them too and
installs the project. Every third-party
module imported by mlalp_core/, pages/ and app.py must belong to a runtime dependency, except a
short list of optional extras, which may only be imported inside a function (lazily, where the
code says what to install when it is missing).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCAL = {"mlalp_core", "pages", "app"}
#: module -> the extra that provides it (imported lazily, never at a module's top level)
OPTIONAL = {"mosek": "mosek"}


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(req).name).lower()


def _runtime() -> dict[str, Requirement]:
    return {_name(r): Requirement(r) for r in PYPROJECT["project"]["dependencies"]}


def _sources() -> list[Path]:
    files = list((ROOT / "mlalp_core").rglob("*.py")) + [ROOT / "app.py"]
    for folder in ("pages",):
        if (ROOT / folder).is_dir():
            files += list((ROOT / folder).rglob("*.py"))
    return files


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported at module level?) for every absolute import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    out = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name.split(".")[0], top) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module.split(".")[0], top))
            visit(child, inner)

    visit(tree, True)
    return out


def _distributions(module: str) -> set[str]:
    return {re.sub(r"[-_.]+", "-", d).lower() for d in md.packages_distributions().get(module, [])}


def test_every_imported_module_is_declared_where_it_is_needed():
    runtime = _runtime()
    extras = {k: {_name(r) for r in v} for k, v in PYPROJECT["project"]["optional-dependencies"].items()}
    problems = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        for module, top in _imports(path):
            if module in sys.stdlib_module_names or module in LOCAL or module == "__future__":
                continue
            if module in OPTIONAL:
                extra = OPTIONAL[module]
                if top:
                    problems.append(f"{rel}: optional module {module} imported at module level")
                if not _distributions(module) & extras.get(extra, set()) and module not in extras.get(extra, set()):
                    problems.append(f"{rel}: {module} is not in the extra {extra!r}")
                continue
            dists = _distributions(module)
            if not dists:
                problems.append(f"{rel}: imports {module}, which no installed distribution provides")
            elif not dists & set(runtime):
                problems.append(f"{rel}: imports {module} (from {', '.join(sorted(dists))}), "
                                "not a runtime dependency in pyproject.toml")
    assert not problems, "\n".join(problems)


def test_requirements_files_install_the_project_and_pin_only_declared_packages():
    runtime = _runtime()
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    assert "-e ." in lines, "requirements.txt must install the project (its dependencies come from pyproject.toml)"
    for ln in lines:
        if ln.startswith("-"):
            continue
        req = Requirement(ln)
        assert _name(ln) in runtime, f"requirements.txt pins {req.name}, which pyproject.toml does not declare"
        for spec in req.specifier:  # a pin must satisfy the declared floor
            assert runtime[_name(ln)].specifier.contains(spec.version), f"{ln} violates {runtime[_name(ln)]}"
    # every runtime dependency is named in requirements.txt itself (a reader, or a tool that does
    # not follow "-e .", sees the whole install), with the bound pyproject.toml declares or a pin in it
    listed = {_name(ln) for ln in lines if not ln.startswith("-")}
    assert listed == set(runtime), f"requirements.txt and pyproject.toml differ: {sorted(listed ^ set(runtime))}"
    dev = [ln.split("#")[0].strip() for ln in (ROOT / "requirements-dev.txt").read_text().splitlines()]
    assert set(filter(None, dev)) == {"-r requirements.txt", "-e .[test]"}


def test_installed_versions_meet_the_declared_floors():
    """The floors are what this environment (CI's) satisfies: a floor above it would be untested."""
    assert sys.version_info >= (3, 11)
    assert PYPROJECT["project"]["requires-python"].startswith(">=3.11")
    for name, req in _runtime().items():
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            pytest.fail(f"{name} is declared but not installed")
        assert req.specifier.contains(Version(version), prereleases=True), f"{name} {version} does not meet {req}"
