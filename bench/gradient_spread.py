"""How spread out is the gradient an attack follows? (Explains the l_2 ordering of Table III.)

For one linear constraint g.r <= -m, the l_inf-optimal step (MLA-LP's LP) is -m sign(g)/||g||_1
and the l_2-optimal step (what ML-CW approaches) is -m g/||g||_2^2. Their l_2 norms differ by

    l2(l_inf-optimal) / l2(l_2-optimal) = sqrt(d) ||g||_2 / ||g||_1 = 1 / rho,

where rho = ||g||_1 / (sqrt(d) ||g||_2) is 1 for a perfectly flat |g| and 1/sqrt(d) for a single
pixel (a Gaussian g gives sqrt(2/pi) = 0.80). So MLA-LP can have the smallest l_inf and still a
larger l_2 than ML-CW wherever the evidence for a label sits in few pixels.

This prints rho for the gradient of the hidden label's loss at the clean image, over the paper's
selection, and, when a results store is given, the measured l_2 ratio of MLA-LP to ML-CW next
to it.

    python bench/gradient_spread.py --models demo-gcn demo-liw --store results/demo-bench.sqlite
"""

from __future__ import annotations

import argparse
import math

import torch

from mlalp_core.attacks.losses import per_label_bce
from mlalp_core.attacks.targets import hide_one
from mlalp_core.data.base import stack_images
from mlalp_core.data.registry import load_dataset
from mlalp_core.experiments.runner import select_examples
from mlalp_core.experiments.store import ResultsStore
from mlalp_core.models.registry import load_model


def spread(model_name: str, dataset: str, seed: int, batch: int) -> tuple[int, float, float, float]:
    model = load_model(model_name, device="cpu")
    data = load_dataset(dataset, None)
    sel = select_examples(model, data, model_name=model_name, dataset_name=dataset, split="default",
                          device="cpu")
    target = hide_one(sel.labels, seed=seed, example_ids=sel.indices)
    rhos = []
    for a in range(0, len(sel.indices), batch):
        idx = list(range(a, min(a + batch, len(sel.indices))))
        x = stack_images(data, [sel.indices[i] for i in idx], model.input_size).requires_grad_(True)
        t = target[idx]
        hidden = (sel.labels[idx].bool() & ~t).float()  # the one label each example must lose
        loss = (per_label_bce(model(x), t.float()) * hidden).sum()
        (g,) = torch.autograd.grad(loss, x)
        g = g.flatten(1).double()
        d = g.shape[1]
        rhos += (g.abs().sum(1) / (math.sqrt(d) * g.norm(dim=1))).tolist()
    r = torch.tensor(rhos)
    return len(rhos), r.median().item(), r.min().item(), r.max().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["demo-gcn", "demo-liw"])
    ap.add_argument("--data", default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--store", help="a results store with MLA-LP and ML-CW runs of these models")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = ResultsStore(args.store).rows() if args.store else []
    print(f"{'model':10} {'n':>4} {'rho median':>10} {'[min, max]':>16} | {'1/rho':>6} | {'measured l2 MLA-LP / ML-CW':>26}")
    for name in args.models:
        n, med, lo, hi = spread(name, args.data, args.seed, args.batch)
        measured = "-"
        l2 = {}
        for attack in ("mla-lp", "ml-cw"):
            ok = [r["l2"] for r in rows if r["model"] == name and r["attack"] == attack and r["success"]]
            if ok:
                l2[attack] = sum(ok) / len(ok)
        if len(l2) == 2:
            measured = f"{l2['mla-lp']:.2f} / {l2['ml-cw']:.2f} = {l2['mla-lp'] / l2['ml-cw']:.2f}"
        print(f"{name:10} {n:4d} {med:10.3f} {f'[{lo:.3f}, {hi:.3f}]':>16} | {1 / med:6.2f} | {measured:>26}")


if __name__ == "__main__":
    main()
