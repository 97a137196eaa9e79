"""Benchmark: ExactMaxPool2d (mlalp_core.models.pooling) against nn.MaxPool2d, side by side.

The demo trunk's three 2x2 pools at batch 32 (no-grad forward; forward + backward), then whole
demo models (a no-grad forward pass, an FGSM and a PGD call): each with ExactMaxPool2d as shipped
and with nn.MaxPool2d in its place (the same weights). The two arms are called in turn, the order
reversed every other round; CPU time of this thread, medians and the median of the paired ratios.
Every pair's outputs are compared bit for bit (the figures mean nothing if the numbers differ).

    PYTHONPATH=$PWD python bench/max_pool.py --rounds 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mlalp_core.attacks import make_attack  # noqa: E402
from mlalp_core.attacks.targets import hide_one  # noqa: E402
from mlalp_core.data.demo import load_gallery  # noqa: E402
from mlalp_core.models.demo import load_demo_model  # noqa: E402
from mlalp_core.models.pooling import ExactMaxPool2d, with_nn_max_pools  # noqa: E402


def paired(new: Callable[[], object], old: Callable[[], object], rounds: int) -> tuple[float, float, float]:
    """(new ms, old ms, median of new/old over rounds)."""
    for _ in range(2):
        new(), old()
    tn, to = [], []
    for i in range(rounds):
        for arm, ts in ((new, tn), (old, to)) if i % 2 == 0 else ((old, to), (new, tn)):
            c0 = time.thread_time()
            arm()
            ts.append(time.thread_time() - c0)
    return statistics.median(tn) * 1e3, statistics.median(to) * 1e3, statistics.median(a / b for a, b in zip(tn, to))


def line(what: str, new: float, old: float, ratio: float) -> None:
    print(f"{what:44} {new:9.2f} {old:9.2f} {ratio:9.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, {args.rounds} rounds")
    print(f"{'CPU ms (median)':44} {'exact':>9} {'nn':>9} {'exact/nn':>9}")
    b = args.batch
    for c, s in ((16, 48), (32, 24), (64, 12)):  # the demo trunk's pools at 96x96
        x = torch.randn(b, c, s, s, generator=torch.Generator().manual_seed(0)).relu()
        new, old = ExactMaxPool2d(2), nn.MaxPool2d(2)
        with torch.no_grad():
            assert torch.equal(new(x), old(x))
            line(f"pool {c}x{s}x{s}, no grad", *paired(lambda: new(x), lambda: old(x), args.rounds * 3))
        g = torch.randn(b, c, s // 2, s // 2, generator=torch.Generator().manual_seed(1))

        def fb(pool: nn.Module) -> torch.Tensor:
            xr = x.detach().requires_grad_(True)
            return torch.autograd.grad(pool(xr), xr, g)[0]

        assert torch.equal(fb(new), fb(old))
        line(f"pool {c}x{s}x{s}, forward + backward", *paired(lambda: fb(new), lambda: fb(old), args.rounds * 3))
    gallery = load_gallery()
    for name in ("demo-gcn", "demo-liw"):
        model = load_demo_model(name, device="cpu")
        ref = with_nn_max_pools(model)
        x, y = gallery.images(model.input_size)[:b], gallery.labels()[:b]
        target = hide_one(y, seed=0, example_ids=list(range(len(x))))
        with torch.no_grad():
            assert torch.equal(model(x), ref(x))
            line(f"{name} forward, no grad", *paired(lambda: model(x), lambda: ref(x), args.rounds * 2))
        for attack, settings in (("fgsm", {"eps": 0.02}), ("pgd", {"eps": 0.02, "stop_on_success": False})):
            a_new = make_attack(attack, model, device="cpu", **settings)
            a_old = make_attack(attack, ref, device="cpu", **settings)
            assert torch.equal(a_new(x, target).x_adv, a_old(x, target).x_adv)
            rounds = args.rounds if attack == "fgsm" else max(3, args.rounds // 4)
            line(f"{name} {attack.upper()} call, eps 0.02" + (", 10 steps" if attack == "pgd" else ""),
                 *paired(lambda: a_new(x, target), lambda: a_old(x, target), rounds))


if __name__ == "__main__":
    main()
