"""Benchmark: the CW family (ML-CW, ML-Rank1, ML-Rank2) before and after its savings, side by side.

"before" is the loop as it was: every tensor gathered by index at every iteration
(``in_place_when_whole = False``) and neither stopping rule (``give_up_after=0``,
``success_patience=0``); "after" is the default. The examples are those ``mlalp bench`` attacks
(the paper's selection of the demo data set, hide-one targets, seed 0), the first ``--n`` per
model, in batches of ``--batch``; each batch runs before, then after, so both see the same load
on a shared machine. Success, mean l_2 over successes, model calls and wall time per example,
and how many examples changed outcome or image.

    python bench/cw_speed.py                      # both demo models, the three attacks, 16 examples
    python bench/cw_speed.py --n 8 --attacks ml-cw --threads 2
    python bench/cw_speed.py --identical          # only: the in-place path = the gathered path (fast)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mlalp_core.attacks import make_attack  # noqa: E402
from mlalp_core.attacks.carlini_wagner import CarliniWagnerL2  # noqa: E402
from mlalp_core.attacks.targets import build_target  # noqa: E402
from mlalp_core.data.base import stack_images  # noqa: E402
from mlalp_core.data.registry import load_dataset  # noqa: E402
from mlalp_core.experiments.runner import _default_split, select_examples  # noqa: E402
from mlalp_core.models.registry import load_model  # noqa: E402

BEFORE = dict(give_up_after=0, success_patience=0)
ATTACKS = ["ml-cw", "ml-rank1", "ml-rank2"]


def examples(model_name: str, n: int):
    """The first n examples mlalp bench attacks on the demo data set, with their targets."""
    ds = load_dataset("demo")
    model = load_model(model_name, device="cpu")
    sel = select_examples(model, ds, model_name=model_name, dataset_name="demo", split=_default_split("demo"),
                          device="cpu")
    targets = build_target("hide-one", sel.labels, seed=0, example_ids=sel.indices, label_names=model.label_names)
    n = min(n, len(sel.indices))
    return model, stack_images(ds, sel.indices[:n], model.input_size), targets[:n]


def run(attack, x, target, gathered: bool):
    CarliniWagnerL2.in_place_when_whole = not gathered
    try:
        t0 = time.perf_counter()
        res = attack(x, target)
        return res, time.perf_counter() - t0
    finally:
        CarliniWagnerL2.in_place_when_whole = True


def identical(models: list[str]) -> bool:
    """Short settings (images leave mid-step), both modes: in place vs gathered, bit for bit."""
    ok = True
    for m in models:
        model, x, target = examples(m, 6)
        for a in ATTACKS:
            for mode in ("mlalp", "authors"):
                kw = dict(max_iterations=40, binary_search_steps=3, mode=mode)
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
    ap.add_argument("--identical", action="store_true", help="only check in place = gathered, and exit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, CPU, {args.threads} thread(s); before = gathered path, "
          f"give_up_after=0, success_patience=0; after = defaults", flush=True)
    if args.identical:
        sys.exit(0 if identical(args.models) else 1)
    rows = []
    for m in args.models:
        model, x, target = examples(m, args.n)
        for a in args.attacks:
            acc: dict[str, dict[str, list]] = {k: {"success": [], "l2": [], "calls": [], "x": []} for k in ("b", "a")}
            wall = {"b": 0.0, "a": 0.0}
            for s in range(0, len(x), args.batch):
                xb, tb = x[s:s + args.batch], target[s:s + args.batch]
                for key, gathered, kw in (("b", True, BEFORE), ("a", False, {})):
                    res, dt = run(make_attack(a, model, device="cpu", **kw), xb, tb, gathered)
                    wall[key] += dt
                    acc[key]["success"] += res.success.tolist()
                    acc[key]["l2"] += res.perturbation.flatten(1).norm(dim=1).tolist()
                    acc[key]["calls"] += res.model_calls.tolist()
                    acc[key]["x"].append(res.x_adv)
                print(f"  {m} {a} examples {s}-{s + len(xb) - 1}: before {wall['b']:.0f} s, after {wall['a']:.0f} s "
                      "(running totals)", flush=True)
            n = len(acc["b"]["success"])

            def summary(d):
                l2 = [v for v, ok in zip(d["l2"], d["success"]) if ok]
                return sum(d["success"]) / n, (sum(l2) / len(l2) if l2 else float("nan")), sum(d["calls"]) / n

            sb, sa = summary(acc["b"]), summary(acc["a"])
            flips = sum(p != q for p, q in zip(acc["b"]["success"], acc["a"]["success"]))
            same_x = int((torch.cat(acc["b"]["x"]) == torch.cat(acc["a"]["x"])).flatten(1).all(1).sum())
            both = [(p, q) for p, q, u, v in zip(acc["b"]["l2"], acc["a"]["l2"], acc["b"]["success"],
                                                acc["a"]["success"]) if u and v]
            worst = max((q / p for p, q in both), default=float("nan"))
            rows.append((m, a, n, sb, sa, wall["b"] / n, wall["a"] / n, flips, same_x, worst))
    print()
    print("| model | attack | examples | success before | success after | l_2 before | l_2 after | model calls before | "
          "model calls after | calls after/before | s/example before | s/example after | time after/before | "
          "outcomes changed | identical x_adv | worst l_2 after/before |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m, a, n, sb, sa, tb, ta, flips, same_x, worst in rows:
        print(f"| {m} | {a} | {n} | {sb[0]:.3f} | {sa[0]:.3f} | {sb[1]:.4f} | {sa[1]:.4f} | {sb[2]:.0f} | {sa[2]:.0f} | "
              f"{sa[2] / sb[2]:.3f} | {tb:.2f} | {ta:.2f} | {ta / tb:.3f} | {flips} | {same_x}/{n} | {worst:.4f} |")
    tot_b, tot_a = sum(r[5] * r[2] for r in rows), sum(r[6] * r[2] for r in rows)
    print(f"\nall: {tot_b:.0f} s before, {tot_a:.0f} s after: {tot_a / tot_b:.3f} of the time")


if __name__ == "__main__":
    main()
