"""Benchmark: how long the paper figures take to draw and save, and how large the files are.

The five attacks run once on a demo image (quick settings: the figure is what is timed); then
the Fig. 1 grid (shared z-range), the single-result panel and the budget curves are drawn and
saved as PDF, SVG and PNG (300 dpi) at several surface resolutions. Prints the machine's load.

    python bench/figures.py
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mlalp_core as ml  # noqa: E402
from mlalp_core.viz.figures import GridRow  # noqa: E402
from mlalp_core.viz.paper import budget_curves, fig1_grid, figure_bytes, result_panel  # noqa: E402

QUICK = {"mla-lp": {}, "ml-deepfool": {"max_iterations": 5},
         "ml-cw": {"max_iterations": 100, "binary_search_steps": 3},
         "ml-rank1": {"max_iterations": 100, "binary_search_steps": 3},
         "ml-rank2": {"max_iterations": 100, "binary_search_steps": 3}}


def main() -> None:
    print(f"# load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    model = ml.load_model("demo-gcn", device="cpu")
    data = ml.load_dataset("demo")
    x = ml.stack_images(data, [5], model.input_size)
    target = ml.hide_one(data.labels()[5:6], seed=0, example_ids=[5])
    res = {a: ml.attack(a, model, x, target, **kw) for a, kw in QUICK.items()}
    rows = [GridRow(ml.ATTACKS[a].display_name, r.perturbation[0], r.x_adv[0], caption="labels") for a, r in res.items()]
    r = res["mla-lp"]
    curves = {"linf": {("demo-gcn", "demo", a): ([0.01, 0.02, 0.05], [0.3, 0.7, 1.0]) for a in QUICK},
              "l2": {("demo-gcn", "demo", a): ([1.0, 2.0, 5.0], [0.3, 0.7, 1.0]) for a in QUICK}}
    figures = [(f"fig1 grid, {k} cells", lambda k=k: fig1_grid(rows, original=x[0], resolution=k)) for k in (32, 64, 96)]
    figures += [(f"result panel, {k} cells", lambda k=k: result_panel(
        x=r.x[0], x_adv=r.x_adv[0], r=r.perturbation[0], label_names=model.label_names, probs_clean=r.probs_clean[0],
        probs_adv=r.probs_adv[0], target=r.target[0], trace=r.trace[0], resolution=k)) for k in (48, 96)]
    figures += [("budget curves", lambda: budget_curves(curves))]
    print(f"{'figure':26} {'format':6} {'draw+save (s)':>13} {'size (MB)':>10}")
    for name, make in figures:
        for fmt in ("pdf", "svg", "png"):
            t0 = time.perf_counter()
            data_ = figure_bytes(make(), fmt, dpi=300)
            print(f"{name:26} {fmt:6} {time.perf_counter() - t0:13.2f} {len(data_) / 1e6:10.2f}", flush=True)


if __name__ == "__main__":
    main()
