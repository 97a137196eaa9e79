"""Benchmark: MLA-LP+'s PGD polish against PGD at its minimum budget, for several polish settings.

From a results store holding, per model, an MLA-LP run (the paper's settings) and a PGD run with
``min_budget=true`` on the same examples (``mlalp bench --attacks mla-lp pgd --set
pgd.min_budget=true``), MLA-LP is re-run once per model and each (factor, steps, step) polish is
applied to its successes; printed per model and setting: the median l_inf ratio to PGD's on the
common successes, the wins, and the mean model calls (MLA-LP's plus the polish's) against PGD's.

    python bench/polish_sweep.py STORE --combos 0.95,20,0.1 0.97,12,0.1 0.96,12,0.12
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mlalp_core as ml  # noqa: E402
from mlalp_core.attacks import MLALP  # noqa: E402
from mlalp_core.attacks.polish import polish_pgd  # noqa: E402
from mlalp_core.experiments.store import ResultsStore  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("--models", nargs="+", default=["demo-gcn", "demo-liw"])
    p.add_argument("--combos", nargs="+", default=["0.95,20,0.1", "0.97,12,0.1", "0.96,12,0.12", "0.95,15,0.1"],
                   help="factor,steps,step triples")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    store = ResultsStore(args.store)
    runs = store.runs()
    combos = [tuple(float(v) for v in c.split(",")) for c in args.combos]
    print(f"# torch {torch.__version__}, {args.threads} thread(s); store {args.store}")
    for name in args.models:
        pgd = next(r for r in runs if r["model"] == name and r["attack"] == "pgd" and r["settings"].get("min_budget"))
        mla = next(r for r in runs if r["model"] == name and r["attack"] == "mla-lp"
                   and r["settings"].get("polish", "none") == "none" and r["settings"].get("mode") == "mlalp")
        prow = {r["example_id"]: r for r in store.rows(run_key=pgd["run_key"])}
        rows = store.rows(run_key=mla["run_key"])
        model = ml.load_model(name, device="cpu")
        data = ml.load_dataset("demo")
        x = ml.stack_images(data, [r["idx"] for r in rows], model.input_size)
        target = torch.stack([store.example(mla["run_key"], r["example_id"])["target"] for r in rows])
        res = MLALP(model, device="cpu")(x, target)
        ok = res.success
        ok_ids = [rows[j]["example_id"] for j in ok.nonzero().flatten().tolist()]
        pgd_calls = statistics.mean(r["model_calls"] for r in prow.values())
        for factor, steps, step in combos:
            out = polish_pgd(model, x[ok], res.x_adv[ok], target[ok], model.threshold, factor=factor, steps=int(steps),
                             step=step, rounds=100)
            linf = (out.x_adv - x[ok]).flatten(1).abs().amax(1)
            calls = res.model_calls.double()
            calls[ok] += out.calls.double()
            ratios = [float(linf[k]) / prow[e]["linf"] for k, e in enumerate(ok_ids) if prow[e]["success"]]
            print(f"{name} factor {factor:g} steps {int(steps)} step {step:g}: median l_inf ratio "
                  f"{statistics.median(ratios):.4f}, smaller on {sum(r < 1 for r in ratios)}/{len(ratios)}; calls "
                  f"{float(calls.mean()):.1f} vs PGD {pgd_calls:.1f} = {float(calls.mean()) / pgd_calls:.3f}x", flush=True)


if __name__ == "__main__":
    main()
