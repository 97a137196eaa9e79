"""Benchmark: attacks on the demo gallery (and time per image on the full-size architectures).

For each attack: the examples the paper would attack (prediction equals ground truth, at least
two positive labels), one positive label hidden at random (seeded), then success rate, mean
l_inf and l_2 of the successes, and wall time per image. With ``--full-size`` it also times
MLA-LP per image on the paper's architectures with random weights (success is meaningless
there; the time is not).

    python bench/attack.py                                # MLA-LP on both demo models, CPU
    python bench/attack.py --attacks mla-lp ml-cw --device cuda --batch 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from mlalp_core.attacks import make_attack  # noqa: E402
from mlalp_core.attacks.targets import hide_one  # noqa: E402
from mlalp_core.cli.bench import parse_sets  # noqa: E402
from mlalp_core.data.base import stack_images  # noqa: E402
from mlalp_core.data.demo import load_gallery  # noqa: E402
from mlalp_core.device import resolve_device  # noqa: E402
from mlalp_core.experiments.metrics import perturbation_norms  # noqa: E402
from mlalp_core.models.demo import load_demo_model  # noqa: E402


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo-gcn", "demo-liw"])
    ap.add_argument("--attacks", nargs="+", default=["mla-lp"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--box", action="store_true", help="MLA-LP with the exact [0,1] box")
    ap.add_argument("--set", action="append", default=[], metavar="ATTACK.SETTING=VALUE",
                    help="an attack setting, as mlalp bench's --set (e.g. ml-cw.max_iterations=100)")
    ap.add_argument("--full-size", action="store_true")
    args = ap.parse_args()
    sets = parse_sets(args.set)
    dev = resolve_device(args.device)
    print(f"# torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}")
    gallery = load_gallery()
    hdr = f"{'model':10} {'attack':12} | {'attacked':>8} {'success':>8} {'linf':>9} {'l2':>8} {'s/img':>8}"
    print(hdr)
    print("-" * len(hdr))
    for mname in args.models:
        model = load_demo_model(mname, device=dev)
        x_all = stack_images(gallery, range(len(gallery)), model.input_size)
        y_all = gallery.labels()
        with torch.no_grad():
            pred = model.predict(x_all.to(dev)).cpu()
        keep = ((pred == y_all).all(1) & (y_all.sum(1) >= 2)).nonzero().flatten()
        x, y = x_all[keep], y_all[keep]
        target = hide_one(y, seed=args.seed, example_ids=keep.tolist())
        for aname in args.attacks:
            settings = dict(sets.get(aname, {}))
            if args.box and aname == "mla-lp":
                settings["box"] = True
            attack = make_attack(aname, model, device=dev, **settings)
            succ, linf, l2 = [], [], []
            sync(dev)
            t0 = time.perf_counter()
            for a in range(0, len(x), args.batch):
                res = attack(x[a:a + args.batch], target[a:a + args.batch])
                norms = perturbation_norms(res.perturbation)
                succ.append(res.success)
                linf.append(norms["linf"])
                l2.append(norms["l2"])
            sync(dev)
            dt = time.perf_counter() - t0
            s = torch.cat(succ)
            li, l2v = torch.cat(linf)[s], torch.cat(l2)[s]
            print(f"{mname:10} {aname:12} | {len(x):8d} {float(s.float().mean()):8.3f} "
                  f"{float(li.mean()) if s.any() else float('nan'):9.6f} {float(l2v.mean()) if s.any() else float('nan'):8.5f} "
                  f"{dt / len(x):8.3f}", flush=True)
    if args.full_size:
        from paper_models import build  # calibrated random-weight models, as bench/paper_models.py

        for name, model in [("ml-gcn", build("ml-gcn")), ("ml-liw", build("ml-liw"))]:
            model = model.to(dev).eval()
            x = torch.rand(args.batch, 3, *model.input_size)
            with torch.no_grad():
                pred = model.predict(x.to(dev)).cpu()
            pred[:, 0] = True  # something to hide
            target = pred.clone()
            target[:, 0] = False
            attack = make_attack("mla-lp", model, device=dev, max_iterations=3)
            sync(dev)
            t0 = time.perf_counter()
            res = attack(x, target)
            sync(dev)
            dt = time.perf_counter() - t0
            its = int(res.iterations.sum())
            lp = np.mean([e["lp_s"] for tr in res.trace for e in tr])
            jac = np.mean([e["jacobian_s"] for tr in res.trace for e in tr])
            print(f"{name:10} {'mla-lp':12} | random weights: {dt / max(its, 1):.3f} s per image-iteration "
                  f"(Jacobian {jac:.3f} s, LP {lp:.3f} s), {its} image-iterations", flush=True)


if __name__ == "__main__":
    main()
