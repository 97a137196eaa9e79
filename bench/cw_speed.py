"""Benchmark: the CW family (ML-CW, ML-Rank1, ML-Rank2) before and after its savings, side by side.

"before" is the code of commit ``--before-rev`` (default 0a30d14, the last before the GCN
label-branch cache, the frozen parameters and the allocator setting of ``Attack.__call__`` and the
loop on the running images' own tensors), run as the loop was before the savings of fff3654: every
tensor gathered by index at every iteration (``in_place_when_whole = False``) and neither stopping
rule (``give_up_after=0``, ``success_patience=0``). So the cache is off there: that code has none.
"after" is the working tree with the defaults. Each arm runs in a process of its own: the
allocator setting (``mlalp_core.allocator``) changes glibc's thresholds for the rest of a process,
so a "before" run in the same process would not be the code as it was. The before process imports
``mlalp_core`` and ``assets`` as ``git archive`` extracts them from the commit. The examples are
those ``mlalp bench`` attacks (the paper's selection of the demo data set, hide-one targets, seed
0), the first ``--n`` per model (both arms must build the same images and targets: checked), in
batches of ``--batch``; each batch runs before, then after, so both see the same load on a shared
machine. Success, mean l_2 over successes, model calls and wall time per example, how many
examples changed outcome or image; the progress lines add each arm's page faults and system time.

    python bench/cw_speed.py                      # both demo models, the three attacks, 16 examples
    python bench/cw_speed.py --n 8 --attacks ml-cw --threads 2
    python bench/cw_speed.py --same after         # both arms with the defaults: the working tree's code alone
    python bench/cw_speed.py --same before --steps 3 --max-iterations 200   # both gathered, shorter
    python bench/cw_speed.py --identical          # only: the in-place path = the gathered path (fast)
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BEFORE = dict(give_up_after=0, success_patience=0)
ATTACKS = ["ml-cw", "ml-rank1", "ml-rank2"]
BEFORE_REV = "0a30d14"


# ---- run in a worker process, on the code of the tree it was started on ----------------------------


def examples(model_name: str, n: int) -> tuple[Any, Any, Any]:
    """The first n examples mlalp bench attacks on the demo data set, with their targets."""
    from mlalp_core.attacks.targets import build_target
    from mlalp_core.data.base import stack_images
    from mlalp_core.data.registry import load_dataset
    from mlalp_core.experiments.runner import _default_split, select_examples
    from mlalp_core.models.registry import load_model

    ds = load_dataset("demo")
    model = load_model(model_name, device="cpu")
    sel = select_examples(model, ds, model_name=model_name, dataset_name="demo", split=_default_split("demo"),
                          device="cpu")
    targets = build_target("hide-one", sel.labels, seed=0, example_ids=sel.indices, label_names=model.label_names)
    n = min(n, len(sel.indices))
    return model, stack_images(ds, sel.indices[:n], model.input_size), targets[:n]


def run(attack: Any, x: Any, target: Any, gathered: bool) -> tuple[Any, float]:
    from mlalp_core.attacks.carlini_wagner import CarliniWagnerL2

    CarliniWagnerL2.in_place_when_whole = not gathered
    try:
        t0 = time.perf_counter()
        res = attack(x, target)
        return res, time.perf_counter() - t0
    finally:
        CarliniWagnerL2.in_place_when_whole = True


def worker(before: bool, tree: str) -> None:
    """Answer the main process's requests (pickled, on stdin) with this tree's code (on stdout)."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what the code prints goes to stderr, not into the replies
    sys.path.insert(0, tree)
    import mlalp_core  # before torch: its OpenMP setting

    if not os.path.abspath(mlalp_core.__file__).startswith(os.path.abspath(tree) + os.sep):
        raise RuntimeError(f"the worker imported {mlalp_core.__file__}, not the code under {tree}")
    import torch

    from mlalp_core.attacks import make_attack

    data: dict[str, Any] = {}
    while True:
        req = pickle.load(sys.stdin.buffer)
        if req[0] == "quit":
            return
        if req[0] == "setup":
            _, models, n, threads = req
            torch.set_num_threads(threads)
            data = {m: examples(m, n) for m in models}
            reply: Any = {m: (x, t) for m, (_, x, t) in data.items()}
        else:
            _, m, a, s, batch, short = req
            model, x, target = data[m]
            attack = make_attack(a, model, device="cpu", **short, **(BEFORE if before else {}))
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            res, dt = run(attack, x[s:s + batch], target[s:s + batch], gathered=before)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            reply = dict(success=res.success.tolist(), l2=res.perturbation.flatten(1).norm(dim=1).tolist(),
                         calls=res.model_calls.tolist(), x=res.x_adv, wall=dt, faults=r1.ru_minflt - r0.ru_minflt,
                         sys=r1.ru_stime - r0.ru_stime)
        pickle.dump(reply, replies)
        replies.flush()


# ---- the main process ----------------------------------------------------------------------------


class Arm:
    """A worker process on one tree."""

    def __init__(self, key: str, tree: str) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", key, "--tree", tree],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tree)

    def ask(self, *req: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        pickle.dump(req, self.proc.stdin)
        self.proc.stdin.flush()
        return pickle.load(self.proc.stdout)

    def close(self) -> None:
        assert self.proc.stdin is not None
        pickle.dump(("quit",), self.proc.stdin)
        self.proc.stdin.close()
        self.proc.wait()


def extract(rev: str, into: str) -> str:
    """``mlalp_core`` and ``assets`` of commit ``rev``, extracted under ``into``; its full hash."""
    full = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", rev + "^{commit}"], check=True,
                          capture_output=True, text=True).stdout.strip()
    tar = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", full, "mlalp_core", "assets"], check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return full


def identical(models: list[str]) -> bool:
    """Short settings (images leave mid-step), both modes: in place vs gathered, bit for bit."""
    import torch

    from mlalp_core.attacks import make_attack

    ok = True
    for m in models:
        model, x, target = examples(m, 6)
        for a in ATTACKS:
            for mode in ("mlalp", "authors"):
                kw: dict[str, Any] = dict(max_iterations=40, binary_search_steps=3, mode=mode)
                if mode == "mlalp":
                    kw.update(abort_every=4, **BEFORE)
                attack = make_attack(a, model, device="cpu", **kw)
                (fast, _), (slow, _) = run(attack, x, target, False), run(attack, x, target, True)
                same = (torch.equal(fast.x_adv, slow.x_adv) and torch.equal(fast.model_calls, slow.model_calls)
                        and str(fast.trace) == str(slow.trace))
                ok &= same
                print(f"{m:9} {a:9} {mode:8} in place vs gathered: {'bit-identical' if same else 'DIFFERENT'}",
                      flush=True)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo-gcn", "demo-liw"])
    ap.add_argument("--attacks", nargs="+", default=ATTACKS)
    ap.add_argument("--n", type=int, default=16, help="examples per model (the first ones mlalp bench attacks)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-iterations", type=int, help="a shorter run than the paper's 1000 (smoke tests)")
    ap.add_argument("--steps", type=int, help="binary-search steps, fewer than the paper's 10 (smoke tests)")
    ap.add_argument("--before-rev", default=BEFORE_REV, help="the commit whose code runs as 'before'")
    ap.add_argument("--same", choices=("before", "after"), help="both arms with the before settings (gathered, no "
                    "stopping rule) or both with the defaults: what the working tree's code alone changes (every "
                    "x_adv must be the same)")
    ap.add_argument("--identical", action="store_true", help="only check in place = gathered, and exit")
    ap.add_argument("--worker", choices=("before", "after"), help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker == "before", args.tree)
        return
    if args.identical:
        sys.path.insert(0, ROOT)
        import torch

        torch.set_num_threads(args.threads)
        sys.exit(0 if identical(args.models) else 1)
    import torch

    tmp = tempfile.mkdtemp(prefix="cw_speed_before_")
    try:
        rev = extract(args.before_rev, tmp)
        head = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                              text=True).stdout.strip()
        said = {"before": "gathered path, give_up_after=0, success_patience=0", "after": "defaults"}
        print(f"# torch {torch.__version__}, CPU, {args.threads} thread(s); before = commit {rev[:10]}, "
              f"{said[args.same or 'before']}; after = working tree ({head}), {said[args.same or 'after']}; one "
              "process per arm", flush=True)
        keys = {"b": args.same or "before", "a": args.same or "after"}  # the settings each arm runs with
        arms = {"b": Arm(keys["b"], tmp), "a": Arm(keys["a"], ROOT)}
        try:
            rows = bench(arms, args)
        finally:
            for arm in arms.values():
                arm.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| model | attack | examples | success before | success after | l_2 before | l_2 after | model calls before | "
          "model calls after | calls after/before | s/example before | s/example after | time after/before | "
          "outcomes changed | identical x_adv | identical x_adv of successes | worst l_2 after/before |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m, a, n, sb, sa, tb, ta, flips, same_x, same_succ, worst in rows:
        print(f"| {m} | {a} | {n} | {sb[0]:.3f} | {sa[0]:.3f} | {sb[1]:.4f} | {sa[1]:.4f} | {sb[2]:.0f} | {sa[2]:.0f} | "
              f"{sa[2] / sb[2]:.3f} | {tb:.2f} | {ta:.2f} | {ta / tb:.3f} | {flips} | {same_x}/{n} | {same_succ} | "
              f"{worst:.4f} |")
    tot_b, tot_a = sum(r[5] * r[2] for r in rows), sum(r[6] * r[2] for r in rows)
    print(f"\nall: {tot_b:.0f} s before, {tot_a:.0f} s after: {tot_a / tot_b:.3f} of the time")


def bench(arms: dict[str, Arm], args: argparse.Namespace) -> list[tuple]:
    """Each batch before, then after; the rows of the table."""
    import torch

    sets = {k: arm.ask("setup", args.models, args.n, args.threads) for k, arm in arms.items()}
    for m in args.models:
        (xb, tb), (xa, ta) = sets["b"][m], sets["a"][m]
        if not (torch.equal(xb, xa) and torch.equal(tb, ta)):
            raise SystemExit(f"{m}: the two arms built different examples or targets")
    short = {k: v for k, v in (("max_iterations", args.max_iterations), ("binary_search_steps", args.steps))
             if v is not None}
    rows = []
    for m in args.models:
        n = len(sets["a"][m][0])
        for a in args.attacks:
            acc: dict[str, dict[str, list]] = {k: {"success": [], "l2": [], "calls": [], "x": []} for k in ("b", "a")}
            wall = {"b": 0.0, "a": 0.0}
            faults = {"b": 0, "a": 0}
            sys_s = {"b": 0.0, "a": 0.0}
            for s in range(0, n, args.batch):
                for key in ("b", "a"):
                    r = arms[key].ask("run", m, a, s, args.batch, short)
                    wall[key] += r["wall"]
                    faults[key] += r["faults"]
                    sys_s[key] += r["sys"]
                    for f in ("success", "l2", "calls"):
                        acc[key][f] += r[f]
                    acc[key]["x"].append(r["x"])
                print(f"  {m} {a} examples {s}-{min(s + args.batch, n) - 1}: before {wall['b']:.0f} s, after "
                      f"{wall['a']:.0f} s; page faults {faults['b']} / {faults['a']}, system time {sys_s['b']:.1f} s / "
                      f"{sys_s['a']:.1f} s (running totals)", flush=True)

            def summary(d):
                l2 = [v for v, ok in zip(d["l2"], d["success"]) if ok]
                return sum(d["success"]) / n, (sum(l2) / len(l2) if l2 else float("nan")), sum(d["calls"]) / n

            sb, sa = summary(acc["b"]), summary(acc["a"])
            flips = sum(p != q for p, q in zip(acc["b"]["success"], acc["a"]["success"]))
            same = (torch.cat(acc["b"]["x"]) == torch.cat(acc["a"]["x"])).flatten(1).all(1)
            succ = torch.tensor(acc["b"]["success"]) & torch.tensor(acc["a"]["success"])
            same_x, same_succ = int(same.sum()), f"{int((same & succ).sum())}/{int(succ.sum())}"
            both = [(p, q) for p, q, u, v in zip(acc["b"]["l2"], acc["a"]["l2"], acc["b"]["success"],
                                                acc["a"]["success"]) if u and v]
            worst = max((q / p for p, q in both), default=float("nan"))
            rows.append((m, a, n, sb, sa, wall["b"] / n, wall["a"] / n, flips, same_x, same_succ, worst))
    return rows


if __name__ == "__main__":
    main()
