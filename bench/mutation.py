"""Mutation testing of the path from an attack's result to a published number: small wrong changes
(mutants) of the library, each run against the tests that should catch it; a mutant that passes
them all survives, and names a wrong number the suite would let through.

    PYTHONPATH=$PWD python bench/mutation.py                      # 30 mutants per module, 2 workers, <= 19 min
    PYTHONPATH=$PWD python bench/mutation.py --only metrics targets --max-mutants 0 --budget 1800
    PYTHONPATH=$PWD python bench/mutation.py --rev 0389d07        # the tree (code and tests) of a commit
    PYTHONPATH=$PWD python bench/mutation.py --issue-table        # issue 25's mutants: every test that fails
    PYTHONPATH=$PWD python bench/mutation.py --list               # the mutants, without running anything

Mutants are made on the AST (the operators below: comparisons, arithmetic, boolean operators,
constants, negated conditions, swapped or dropped calls, dropped keyword arguments, dropped list,
tuple and dict elements) of the functions each target names, spliced into the source as text, in a
temporary copy of the tree (the working tree's tracked and untracked files, or ``git archive REV``):
the real files are never touched. Mutants are drawn at random (``--seed``), ``--max-mutants`` per
module (30; 0 for all of them).

First each target's tests run unmutated, traced line by line (sys.settrace, in the module only):
that gives the timeout (3x that run) and which tests run which lines. Then each mutant runs, with
``pytest -x``, the tests that ran a line of its function (lines run while setting up a module's
fixtures count for all the tests of that file), or all the target's tests when none ran it in
this process. Each run is a child forked from a process that imported torch and pytest once (a
fresh interpreter per mutant would spend most of the budget importing). A mutant that hangs
counts as killed and is reported as a timeout.

A mutant that survives is either a gap in the tests or an equivalent mutant (a change no input can
observe). ``bench/mutation_equivalent.txt`` lists the known equivalent ones by id with the reason;
they are reported apart and left out of the survival rate.

No mutant starts after ``--budget`` seconds (1140 by default, baselines included); the targets'
mutants are interleaved, so a run cut short has run a uniform sample of each, and the report says
how many were not run.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT_FILE = Path(__file__).with_name("mutation_equivalent.txt")

#: target name -> (module, functions to mutate (None: all), the tests that should catch a mutant).
#: Tests are listed fast first: ``-x`` stops at the first failure. Test files that do not exist in
#: the tree (``--rev`` of an older commit) are left out.
TARGETS: dict[str, tuple[str, set[str] | None, list[str]]] = {
    "metrics": ("mlalp_core/experiments/metrics.py", None, [
        "tests/test_targets_metrics.py", "tests/test_published_numbers.py", "tests/test_runner.py",
        "-k", "not two_processes and not killed_run and not many_processes"]),
    "reporting": ("mlalp_core/experiments/reporting.py", None, [
        "tests/test_reporting_rules.py", "tests/test_published_numbers.py", "tests/test_runner.py",
        "tests/test_run_rows.py", "tests/test_figures.py", "tests/test_pairwise.py",
        "-k", "not two_processes and not killed_run and not many_processes and not benchmark_page "
              "and (not test_figures or budget)"]),
    "store": ("mlalp_core/experiments/store.py", None, [
        "tests/test_store.py", "tests/test_published_numbers.py", "tests/test_runner.py", "tests/test_run_rows.py",
        "tests/test_first_contact.py",
        "-k", "not two_processes and not killed_run and not benchmark_page and (not test_first_contact or store "
              "or report)"]),
    "pairwise": ("mlalp_core/experiments/pairwise.py", None, ["tests/test_pairwise_rules.py", "tests/test_pairwise.py"]),
    "runner": ("mlalp_core/experiments/runner.py",
               {"BenchConfig.check", "select_examples", "batch_for", "check_objective", "attack_batches",
                "run_attack_on_selection", "run_benchmark", "numerics_note", "process_group_plan"}, [
        "tests/test_runner_rules.py", "tests/test_runner.py", "tests/test_published_numbers.py",
        "tests/test_run_rows.py", "-k", "not two_processes and not benchmark_page and not many_processes"]),
    "targets": ("mlalp_core/attacks/targets.py", None, [
        "tests/test_targets_metrics.py", "tests/test_target_rules.py", "tests/test_published_numbers.py",
        "tests/test_properties.py", "tests/test_gradient_attacks.py",
        "-k", "not batching_does_not_change and (target or hide or add or custom or show or objective "
              "or test_published)"]),
    "gradient": ("mlalp_core/attacks/gradient.py", {"IterativeGradient._project", "IterativeGradient._iterate",
                                                     "IterativeGradient._step",
                                                     "IterativeGradient._gradient_at_normalized"}, [
        "tests/test_projections.py", "tests/test_gradient_attacks.py", "tests/test_gradient_loop.py"]),
    "lp-problem": ("mlalp_core/lp/problem.py", None, [
        "tests/test_lp_problem.py", "tests/test_lp_certificate.py", "tests/test_lp.py", "tests/test_lp_batch.py",
        "-k", "not narrowed and not sweep and not flipped and not many_rows and not line_search "
              "and not threads and not newton and not regime"]),
}

#: Issue 25's mutants, as text replacements (the first pattern found is applied): (name, target,
#: [(old, new), ...]). ``--issue-table`` runs each against its target's tests without -x and lists
#: every test that fails.
ISSUE_MUTANTS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("hide-one target without example_ids (position, not id)", "targets",
     [("return hide_one(labels, seed=seed, example_ids=example_ids)", "return hide_one(labels, seed=seed)")]),
    ("l_inf as amax without abs", "metrics", [('"linf": flat.abs().amax(1)', '"linf": flat.amax(1)')]),
    ("Table III groups rows by attack only (runs merged)", "reporting",
     [("groups[_run_of(r)].append(r)", 'groups[r["attack"]].append(r)')]),
    ("the data set left out of a row's run identity (rows without a run key)", "reporting",
     [('ident = [r.get("model"), r.get("dataset"), r.get("attack"),', 'ident = [r.get("model"), r.get("attack"),')]),
    ("the data set left out of the row order", "reporting",
     [('out.sort(key=lambda r: (r["model"], r["dataset"], ', 'out.sort(key=lambda r: (r["model"], ')]),
    ("the data set left out of the label clash key", "reporting",
     [('clash[(r["model"], r["dataset"], r["objective"], r["label"])]', 'clash[(r["model"], r["objective"], '
                                                                         'r["label"])]')]),
    ("time averaged over successes only", "reporting",
     [('"time_s": _mean([r["time_s"] for r in rs])', '"time_s": _mean([r["time_s"] for r in ok])')]),
    ("run_key without the seed", "store",
     [("parts: list[Any] = [model_id, data_id, attack, settings, seed]",
       "parts: list[Any] = [model_id, data_id, attack, settings]")]),
    ("l_2 projection always onto the sphere", "gradient",
     [("delta = delta * torch.clamp(e / n, max=1.0)", "delta = delta * (e / n)")]),
    ("certificate without the scale factor s", "lp-problem",
     [("    lower = P.s * bound\n", "    lower = bound\n"),
      ("lower = P.s * dual_bound(u, c, P.lo, P.hi)", "lower = dual_bound(u, c, P.lo, P.hi)"),
      ("return P.s * dual_bound(u, c, P.lo, P.hi), viol", "return dual_bound(u, c, P.lo, P.hi), viol")]),
]


# ---------------------------------------------------------------------------------------------
# Mutants
# ---------------------------------------------------------------------------------------------

_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}
_CMPOP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
          ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Pow: "**", ast.Mod: "%",
           ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
           ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.And: "and", ast.Or: "or"}
#: method/function swaps: a value computed another plausible way
_SWAP = {"amax": "amin", "amin": "amax", "max": "min", "min": "max", "maximum": "minimum", "minimum": "maximum",
         "sum": "mean", "mean": "sum", "any": "all", "all": "any", "clamp_min": "clamp_max", "clamp_max": "clamp_min"}
#: calls that wrap a value and can be dropped (f(x) -> x, x.f() -> x)
#: (type conversions, detach/clone and the like are left out: their mutants are mostly equivalent
#: or crash at once)
_UNWRAP = {"abs", "clamp", "clamp_min", "clamp_max", "sqrt", "sorted", "flatten", "double", "round"}


@dataclass
class Mutant:
    id: str  # target::function::operator#k (stable while the function's earlier code is unchanged)
    target: str
    module: str
    line: int
    what: str  # "a < b -> a <= b"
    source: str = field(repr=False)  # the whole mutated module
    span: tuple[int, int] = (0, 0)  # lines of the innermost function around it (test selection)


class _Finder(ast.NodeVisitor):
    """Collect (function qualname, node, replacement node, operator, description) in source order."""

    def __init__(self, functions: set[str] | None) -> None:
        self.functions = functions
        self.stack: list[str] = []
        self.found: list[tuple[str, ast.AST, ast.AST, str, str]] = []
        self.skip_ids: set[int] = set()
        self.depth = 0  # functions entered
        self.spans: list[tuple[int, int]] = []  # their line ranges

    def _in_scope(self) -> bool:
        """Inside a function (a method's qualname: Class.method) that the target names."""
        if not self.depth:
            return False
        name = ".".join(self.stack)
        return self.functions is None or any(name == f or name.startswith(f + ".") for f in self.functions)

    def _scoped(self, node, name, function=False):
        self.stack.append(name)
        self.depth += function
        if function:
            self.spans.append((node.lineno, node.end_lineno))
        self.generic_visit(node)
        if function:
            self.spans.pop()
        self.depth -= function
        self.stack.pop()

    def visit_ClassDef(self, node):
        self._scoped(node, node.name)

    def visit_FunctionDef(self, node):
        for d in node.decorator_list:  # decorators and annotations are not behaviour
            self.skip_ids.update(id(n) for n in ast.walk(d))
        for a in ast.walk(node.args):
            if isinstance(a, ast.arg) and a.annotation is not None:
                self.skip_ids.update(id(n) for n in ast.walk(a.annotation))
        if node.returns is not None:
            self.skip_ids.update(id(n) for n in ast.walk(node.returns))
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            self.skip_ids.add(id(node.body[0].value))  # the docstring
        self._scoped(node, node.name, True)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node):
        self.skip_ids.update(id(n) for n in ast.walk(node.annotation))
        self.generic_visit(node)

    def visit_JoinedStr(self, node):  # text of messages: not numbers
        return

    def _add(self, node, new, op, what):
        if id(node) not in self.skip_ids and self._in_scope():
            self.found.append((".".join(self.stack), node, new, op, what, self.spans[-1]))

    def visit_BinOp(self, node):
        swap = _BINOP.get(type(node.op))
        if swap is not None:
            new = copy.copy(node)
            new.op = swap()
            self._add(node, new, "binop", f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[swap]}")
        self.generic_visit(node)

    def visit_Compare(self, node):
        for k, op in enumerate(node.ops):
            swap = _CMPOP.get(type(op))
            if swap is not None:
                new = copy.copy(node)
                new.ops = list(node.ops)
                new.ops[k] = swap()
                self._add(node, new, "compare", f"{_SYMBOL[type(op)]} -> {_SYMBOL[swap]}")
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        new = copy.copy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._add(node, new, "boolop", f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[type(new.op)]}")
        for k in range(len(node.values)):  # one operand dropped
            if len(node.values) > 1:
                new = copy.copy(node)
                new.values = node.values[:k] + node.values[k + 1:]
                self._add(node, new if len(new.values) > 1 else new.values[0], "boolop_drop",
                          f"drop operand {k + 1} of {_SYMBOL[type(node.op)]}")
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, (ast.Not, ast.USub)):
            self._add(node, node.operand, "unary", f"drop {'not' if isinstance(node.op, ast.Not) else 'unary -'}")
        self.generic_visit(node)

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool):
            self._add(node, ast.Constant(not v), "const", f"{v} -> {not v}")
        elif isinstance(v, int):
            new = 1 if v == 0 else 0 if v == 1 else v + 1
            self._add(node, ast.Constant(new), "const", f"{v} -> {new}")
        elif isinstance(v, float):
            new = 1.0 if v == 0 else v * 2
            self._add(node, ast.Constant(new), "const", f"{v!r} -> {new!r}")

    def visit_If(self, node):
        self._add(node.test, ast.UnaryOp(ast.Not(), node.test), "if_negate", "negate the condition")
        self.generic_visit(node)

    def visit_IfExp(self, node):
        self._add(node.test, ast.UnaryOp(ast.Not(), node.test), "if_negate", "negate the condition")
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        swap = _BINOP.get(type(node.op))
        if swap is not None:
            new = copy.copy(node)
            new.op = swap()
            self._add(node, new, "augassign", f"{_SYMBOL[type(node.op)]}= -> {_SYMBOL[swap]}=")
        self.generic_visit(node)

    def visit_Call(self, node):
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        if name in _SWAP and not (isinstance(f, ast.Name) and name in ("sum", "any", "all") and node.keywords):
            new = copy.copy(node)
            new.func = copy.copy(f)
            if isinstance(f, ast.Attribute):
                new.func.attr = _SWAP[name]
            else:
                new.func.id = _SWAP[name]
            self._add(node, new, "call_swap", f"{name} -> {_SWAP[name]}")
        if name in _UNWRAP:
            inner = f.value if isinstance(f, ast.Attribute) and not (isinstance(f.value, ast.Name) and
                                                                     f.value.id in ("torch", "np", "math")) \
                else (node.args[0] if node.args else None)
            if inner is not None:
                self._add(node, inner, "call_drop", f"drop {name}()")
        for k, kw in enumerate(node.keywords):
            if kw.arg is not None:
                new = copy.copy(node)
                new.keywords = node.keywords[:k] + node.keywords[k + 1:]
                self._add(node, new, "kwarg_drop", f"drop {kw.arg}=")
        self.generic_visit(node)

    def _drop_elements(self, node, kind):
        if isinstance(getattr(node, "ctx", ast.Load()), ast.Load) and len(node.elts) >= 2 and not any(
                isinstance(e, ast.Starred) for e in node.elts):
            for k in range(len(node.elts)):
                new = copy.copy(node)
                new.elts = node.elts[:k] + node.elts[k + 1:]
                self._add(node, new, "elem_drop", f"drop element {k + 1} of a {kind}")

    def visit_List(self, node):
        self._drop_elements(node, "list")
        self.generic_visit(node)

    def visit_Tuple(self, node):
        self._drop_elements(node, "tuple")
        self.generic_visit(node)

    def visit_Dict(self, node):
        if len(node.keys) >= 2 and None not in node.keys:
            for k, key in enumerate(node.keys):
                new = copy.copy(node)
                new.keys, new.values = node.keys[:k] + node.keys[k + 1:], node.values[:k] + node.values[k + 1:]
                label = key.value if isinstance(key, ast.Constant) else k + 1
                self._add(node, new, "dict_drop", f"drop entry {label!r} of a dict")
        self.generic_visit(node)

    def visit_Subscript(self, node):
        if isinstance(node.ctx, ast.Load):
            self.generic_visit(node)
        else:  # targets of assignments are not mutated as values, their indices are
            self.visit(node.slice)

    def visit_Slice(self, node):
        for part in (node.lower, node.upper, node.step):
            if part is not None:
                self.visit(part)


def _splice(source: str, lines: list[int], node: ast.AST, new: ast.AST) -> str | None:
    """The source with ``node``'s text replaced by ``new`` (parenthesised expressions)."""
    start = lines[node.lineno - 1] + node.col_offset
    end = lines[node.end_lineno - 1] + node.end_col_offset
    text = ast.unparse(new)
    if isinstance(node, ast.expr):
        text = f"({text})"
    out = source[:start] + text + source[end:]
    try:
        compile(out, "<mutant>", "exec")
    except SyntaxError:
        return None
    return out


def make_mutants(target: str, module: str, functions: set[str] | None, source: str) -> list[Mutant]:
    tree = ast.parse(source)
    finder = _Finder(functions)
    finder.visit(tree)
    offsets = [0]
    for line in source.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    seen: dict[str, int] = {}
    out = []
    for func, node, new, op, what, span in finder.found:
        mutated = _splice(source, offsets, node, new)
        if mutated is None or mutated == source:
            continue
        key = f"{target}::{func}::{op}"
        seen[key] = seen.get(key, 0) + 1
        snippet = ast.get_source_segment(source, node) or ""
        snippet = " ".join(snippet.split())
        out.append(Mutant(f"{key}#{seen[key]}", target, module, node.lineno,
                          f"{what}: `{snippet[:70]}{'...' if len(snippet) > 70 else ''}`", mutated, span))
    return out


def issue_mutants(tree: Path, only: set[str] | None = None) -> list[Mutant]:
    out = []
    for name, target, patterns in ISSUE_MUTANTS:
        if only and target not in only:
            continue
        module = TARGETS[target][0]
        source = (tree / module).read_text()
        for old, new in patterns:
            if source.count(old) == 1:
                out.append(Mutant(f"issue::{name}", target, module, source[:source.index(old)].count("\n") + 1,
                                  f"{old} -> {new}", source.replace(old, new)))
                break
        else:
            print(f"# issue mutant not applicable (pattern not found once): {name}", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def copy_tree(dest: Path, rev: str | None) -> None:
    """The working tree (tracked and untracked files git does not ignore), or ``git archive REV``."""
    dest.mkdir(parents=True)
    if rev:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def pytest_args(tree: Path, target: str, first_failure: bool) -> list[str]:
    args = []
    for a in TARGETS[target][2]:
        if a.startswith("tests/") and not (tree / a.split("::")[0]).exists():
            continue
        args.append(a)
    base = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--no-header", "-o", "addopts="]
    return base + (["-x"] if first_failure else []) + args


class _Collector:
    """A pytest plugin: the tests that failed (errors in set-up included)."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.ran = 0

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            self.ran += 1
        if report.failed and report.nodeid not in self.failed:
            self.failed.append(report.nodeid)

    def pytest_collectreport(self, report):
        if report.failed:
            self.failed.append(f"collecting {report.nodeid}")


class _Tracer:
    """A pytest plugin: the lines of one module each test runs in this process (sys.settrace,
    only in that module's frames). Lines run while setting a test up (module-scoped fixtures)
    count for every test of its file, since the fixture's result feeds them all."""

    def __init__(self, module: Path) -> None:
        self.module = str(module)
        self.calls: dict[str, set[int]] = {}
        self.setups: dict[str, set[int]] = {}
        self.order: list[str] = []
        self.hit: set[int] = set()

    def _global(self, frame, event, arg):
        return self._local if frame.f_code.co_filename == self.module else None

    def _local(self, frame, event, arg):
        if event == "line":
            self.hit.add(frame.f_lineno)
        return self._local

    def pytest_sessionstart(self, session):
        import threading

        sys.settrace(self._global)
        threading.settrace(self._global)

    def pytest_runtest_setup(self, item):
        self.order.append(item.nodeid)
        self.hit = self.setups.setdefault(item.nodeid.split("::")[0], set())

    def pytest_runtest_call(self, item):
        self.hit = self.calls.setdefault(item.nodeid, set())

    def pytest_runtest_teardown(self, item):
        self.hit = self.setups.setdefault(item.nodeid.split("::")[0], set())

    def result(self) -> dict:
        return {"order": self.order, "calls": {k: sorted(v) for k, v in self.calls.items()},
                "setups": {k: sorted(v) for k, v in self.setups.items()}}


def _child(tree: Path, args: list[str], out: Path, trace: str | None) -> None:
    """In a forked child: run pytest on ``tree`` and write what failed (and, with ``trace``, the
    lines of that module each test ran) to ``out``."""
    os.setpgrp()  # its own process group, so that a timeout kills what it started too
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.chdir(tree)
    sys.path.insert(0, str(tree))
    os.environ["PYTHONPATH"] = str(tree)
    import pytest

    col = _Collector()
    tracer = _Tracer(tree / trace) if trace else None
    try:
        rc = int(pytest.main(args, plugins=[col] + ([tracer] if tracer else [])))
        sys.settrace(None)
        import mlalp_core

        where = mlalp_core.__file__
    except BaseException as exc:  # noqa: BLE001 - whatever happens is the mutant's result
        rc, where = 99, f"{type(exc).__name__}: {exc}"
    res = {"rc": rc, "failed": col.failed, "ran": col.ran, "mlalp_core": where}
    if tracer is not None:
        res["cover"] = tracer.result()
    out.write_text(json.dumps(res))
    os._exit(0)


def select_tests(cover: dict, span: tuple[int, int]) -> list[str]:
    """The tests that ran a line of the function (the mutant's span), in the baseline's order."""
    lo, hi = span
    files = {f for f, lines in cover["setups"].items() if any(lo <= n <= hi for n in lines)}
    return [t for t in cover["order"] if t.split("::")[0] in files
            or any(lo <= n <= hi for n in cover["calls"].get(t, ()))]


@dataclass
class Job:
    mutant: Mutant | None  # None: the unmutated baseline of a target
    target: str
    args: list[str]
    timeout: float
    trace: str | None = None  # the baseline records which tests run which lines of this module
    selected: int | None = None  # tests chosen by coverage (None: the target's whole list)


@dataclass
class Outcome:
    job: Job
    status: str  # "killed", "survived", "timeout", "baseline-ok", "baseline-failed"
    failed: list[str]
    seconds: float
    ran: int = 0
    cover: dict | None = None


class Pool:
    """``workers`` slots, each with its own copy of the tree; jobs run in forked children."""

    def __init__(self, workers: int, rev: str | None, tmp: Path) -> None:
        self.trees = []
        for k in range(workers):
            t = tmp / f"tree{k}"
            copy_tree(t, rev)
            self.trees.append(t)
        self.free = list(range(workers))
        self.running: dict[int, tuple[int, Job, float, Path, str | None]] = {}  # pid -> slot, job, t0, out, original
        self.tmp = tmp

    def start(self, job: Job) -> None:
        slot = self.free.pop()
        tree = self.trees[slot]
        original = None
        if job.mutant is not None:
            path = tree / job.mutant.module
            original = path.read_text()
            path.write_text(job.mutant.source)
        for cache in tree.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
        out = self.tmp / f"out{slot}.json"
        out.unlink(missing_ok=True)
        pid = os.fork()
        if pid == 0:
            _child(tree, job.args, out, job.trace)
        self.running[pid] = (slot, job, time.perf_counter(), out, original)

    def _finish(self, pid: int, timed_out: bool) -> Outcome:
        slot, job, t0, out, original = self.running.pop(pid)
        if job.mutant is not None and original is not None:
            (self.trees[slot] / job.mutant.module).write_text(original)
        self.free.append(slot)
        seconds = time.perf_counter() - t0
        if timed_out:
            return Outcome(job, "timeout", [], seconds)
        try:
            res = json.loads(out.read_text())
        except (OSError, ValueError):
            res = {"rc": 98, "failed": ["(the child died without a result)"], "ran": 0,
                   "mlalp_core": str(self.trees[slot])}
        if not str(res["mlalp_core"]).startswith(str(self.trees[slot])):
            raise SystemExit(f"the tests imported mlalp_core from {res['mlalp_core']}, not the copy "
                             f"{self.trees[slot]}: run with PYTHONPATH unset or pointing at the tree")
        if job.mutant is None:
            status = "baseline-ok" if res["rc"] == 0 else "baseline-failed"
        else:
            status = "survived" if res["rc"] == 0 else "killed"
        return Outcome(job, status, res["failed"], seconds, res.get("ran", 0), res.get("cover"))

    def wait(self) -> list[Outcome]:
        """Block until at least one job finishes (or times out); return what finished."""
        done = []
        while not done:
            now = time.perf_counter()
            for pid, (_, job, t0, _, _) in list(self.running.items()):
                if now - t0 > job.timeout:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    os.waitpid(pid, 0)
                    done.append(self._finish(pid, True))
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid and pid in self.running:
                done.append(self._finish(pid, False))
            elif not done:
                time.sleep(0.05)
        return done


def run_jobs(pool: Pool, jobs: Iterator[Job], deadline: float | None, report) -> int:
    """Run jobs until they or the time run out; returns how many were not started."""
    pending = list(jobs)
    while pending or pool.running:
        while pending and pool.free and (deadline is None or time.perf_counter() < deadline):
            pool.start(pending.pop(0))
        if not pool.running:
            break
        for outcome in pool.wait():
            report(outcome)
    return len(pending)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def load_equivalent(path: Path) -> dict[str, str]:
    """id -> why it is equivalent, from lines ``id  # reason``."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            ident, _, why = line.strip().partition(" ")  # ids hold '#' (op#k): the id ends at the first space
            out[ident] = why.strip().removeprefix("#").strip()
    return out


def _warm_imports() -> None:
    """What every child would import: once, here, before forking (not mlalp_core: the children
    import the mutated copy)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["OMP_NUM_THREADS"] = "1"
    import hypothesis  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pytest  # noqa: F401
    import scipy.optimize  # noqa: F401
    import scipy.sparse  # noqa: F401
    import torch

    torch.set_num_threads(1)
    import torchvision  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(TARGETS), help="targets to mutate (default: all)")
    ap.add_argument("--budget", type=float, default=1140.0,
                    help="seconds for the whole run (baselines included); no mutant starts after it")
    ap.add_argument("--max-mutants", type=int, default=30,
                    help="at most this many mutants per target, drawn at random (0: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="order in which mutants are drawn")
    ap.add_argument("--rev", default=None, help="mutate and test the tree of this commit (default: the working tree)")
    ap.add_argument("--equivalent", type=Path, default=EQUIVALENT_FILE, help="known equivalent mutants")
    ap.add_argument("--issue-table", action="store_true", help="run issue 25's mutants, listing every failing test")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout-factor", type=float, default=3.0)
    args = ap.parse_args(argv)
    targets = args.only or list(TARGETS)
    t_start = time.perf_counter()
    equivalent = load_equivalent(args.equivalent)

    with tempfile.TemporaryDirectory(prefix="mlalp-mutation-") as tmpname:
        tmp = Path(tmpname)
        src_tree = tmp / "source"
        copy_tree(src_tree, args.rev)
        if args.issue_table:
            mutants = issue_mutants(src_tree, set(targets))
        else:
            mutants = []
            for t in targets:
                module, functions, _ = TARGETS[t]
                if not (src_tree / module).exists():
                    print(f"# {t}: {module} is not in this tree", file=sys.stderr)
                    continue
                ms = make_mutants(t, module, functions, (src_tree / module).read_text())
                rng = random.Random(f"{args.seed}/{t}")
                rng.shuffle(ms)
                mutants += ms[:args.max_mutants] if args.max_mutants else ms
        counts = {t: sum(m.target == t for m in mutants) for t in targets}
        print(f"# {len(mutants)} mutants: " + ", ".join(f"{t} {counts[t]}" for t in targets)
              + f"; tree: {args.rev or 'working tree'}; {args.workers} workers; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        if args.list:
            for m in sorted(mutants, key=lambda m: (m.target, m.line)):
                print(f"{m.id:60} line {m.line:4d}  {m.what}")
            return 0

        _warm_imports()
        pool = Pool(args.workers, args.rev, tmp)

        # 1. every target's tests pass unmutated: how long they take (the timeout) and which of
        #    them run which lines of the module (a mutant runs the tests that run its function)
        baseline: dict[str, float] = {}
        cover: dict[str, dict] = {}

        def on_baseline(o: Outcome) -> None:
            print(f"# baseline {o.job.target}: {o.status}, {o.ran} tests, {o.seconds:.1f} s (traced)"
                  + (f"; failing: {o.failed}" if o.failed else ""), flush=True)
            if o.status == "baseline-ok":
                baseline[o.job.target] = o.seconds
                cover[o.job.target] = o.cover or {}
            else:
                print(f"# {o.job.target} left out: its tests fail without any mutant (fix them first)", flush=True)

        used = [t for t in targets if counts[t]]
        run_jobs(pool, iter([Job(None, t, pytest_args(pool.trees[0], t, False), 1800.0, trace=TARGETS[t][0])
                             for t in used]), None, on_baseline)
        used = [t for t in used if t in baseline]
        mutants = [m for m in mutants if m.target in used]

        # 2. the mutants, interleaved across targets so that a budget cut leaves a sample of each
        jobs = []
        for m in mutants:
            full = pytest_args(pool.trees[0], m.target, not args.issue_table)
            chosen = select_tests(cover[m.target], m.span) if cover.get(m.target) and not args.issue_table else []
            if chosen:  # the options, then the chosen tests by id (-k/-m were applied when they were listed)
                opts = [a for a in full if not a.startswith("tests/")]
                opts = [a for k, a in enumerate(opts) if a not in ("-k", "-m") and (k == 0 or opts[k - 1] not in
                                                                                   ("-k", "-m"))]
                run_args = opts + chosen
            else:  # no test runs it in this process (maybe in a subprocess): all of them
                run_args = full
            jobs.append(Job(m, m.target, run_args, max(60.0, args.timeout_factor * baseline[m.target]),
                            selected=len(chosen) if chosen else None))
        order: dict[str, list[Job]] = {t: [j for j in jobs if j.target == t] for t in used}
        interleaved = []
        while any(order.values()):
            for t in used:
                if order[t]:
                    interleaved.append(order[t].pop(0))
        outcomes: list[Outcome] = []

        def on_mutant(o: Outcome) -> None:
            outcomes.append(o)
            m = o.job.mutant
            tag = "EQUIVALENT" if m.id in equivalent else o.status.upper()
            first = o.failed[0] if o.failed else ""
            tests = "all" if o.job.selected is None else o.job.selected
            print(f"{tag:10} {o.seconds:6.1f}s {tests:>4} tests  {m.id}  line {m.line}: {m.what}"
                  + (f"  [{first}]" if first and not args.issue_table else ""), flush=True)

        deadline = None if args.issue_table else t_start + args.budget
        not_run = run_jobs(pool, iter(interleaved), deadline, on_mutant)

    # 3. the report
    print()
    if args.issue_table:
        print("| mutation | target | caught by |")
        print("|---|---|---|")
        for o in outcomes:
            m = o.job.mutant
            caught = ", ".join(f.split("/")[-1] for f in o.failed) if o.status != "survived" else "nothing (survived)"
            if o.status == "timeout":
                caught = "timeout"
            print(f"| {m.id.removeprefix('issue::')} | {m.target} | {caught} |")
        return 0
    print(f"{'target':12} {'mutants':>7} {'run':>5} {'killed':>6} {'timeout':>7} {'survived':>8} {'equiv.':>6} "
          f"{'survival rate':>13}")
    total = {"n": 0, "run": 0, "killed": 0, "timeout": 0, "survived": 0, "equiv": 0}
    for t in used:
        os_ = [o for o in outcomes if o.job.target == t]
        eq = [o for o in os_ if o.status == "survived" and o.job.mutant.id in equivalent]
        surv = [o for o in os_ if o.status == "survived" and o.job.mutant.id not in equivalent]
        killed = sum(o.status == "killed" for o in os_)
        tout = sum(o.status == "timeout" for o in os_)
        denom = len(os_) - len(eq)
        rate = f"{100 * len(surv) / denom:.1f} %" if denom else "-"
        print(f"{t:12} {counts[t]:7d} {len(os_):5d} {killed:6d} {tout:7d} {len(surv):8d} {len(eq):6d} {rate:>13}")
        for k, v in (("n", counts[t]), ("run", len(os_)), ("killed", killed), ("timeout", tout),
                     ("survived", len(surv)), ("equiv", len(eq))):
            total[k] += v
    denom = total["run"] - total["equiv"]
    rate = f"{100 * total['survived'] / denom:.1f} %" if denom else "-"
    print(f"{'all':12} {total['n']:7d} {total['run']:5d} {total['killed']:6d} {total['timeout']:7d} "
          f"{total['survived']:8d} {total['equiv']:6d} {rate:>13}")
    if not_run:
        print(f"# {not_run} mutants not run: the budget ({args.budget:.0f} s) ran out (a uniform sample was run)")
    print(f"# {time.perf_counter() - t_start:.0f} s in all")
    survivors = [o for o in outcomes if o.status == "survived" and o.job.mutant.id not in equivalent]
    if survivors:
        print("\nSurvivors (a wrong change no test caught):")
        for o in sorted(survivors, key=lambda o: (o.job.target, o.job.mutant.line)):
            print(f"  {o.job.mutant.id}  {o.job.mutant.module}:{o.job.mutant.line}  {o.job.mutant.what}")
    eqs = [o for o in outcomes if o.status == "survived" and o.job.mutant.id in equivalent]
    if eqs:
        print("\nKnown equivalent (no input can tell them apart):")
        for o in sorted(eqs, key=lambda o: (o.job.target, o.job.mutant.line)):
            print(f"  {o.job.mutant.id}  {o.job.mutant.module}:{o.job.mutant.line}  {o.job.mutant.what}  "
                  f"-- {equivalent[o.job.mutant.id]}")
    stale = [k for k in equivalent if k.split("::")[0] in used and k not in {o.job.mutant.id for o in outcomes}]
    if stale and not not_run and not args.max_mutants:
        print(f"\n# {len(stale)} listed equivalent mutants no longer exist (the code changed): {stale[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
