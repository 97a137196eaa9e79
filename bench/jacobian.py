"""Benchmark: the per-label loss Jacobian, one vectorised backward against l sequential passes.

Models: the two demo models (96x96, 10 labels; the committed weights when present) and the
paper's full-size architectures with random weights (ML-GCN ResNet-101 at 448, ML-LIW
Inception-v3 at 299, 20 labels). Prints forward time, batched and sequential Jacobian time per
image and their ratio, and the largest relative difference between the two.

    python bench/jacobian.py                     # CPU, batch 1
    python bench/jacobian.py --device cuda --batch 1 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from mlalp_core.attacks.jacobian import batched_jacobian  # noqa: E402
from mlalp_core.attacks.losses import per_label_bce  # noqa: E402
from mlalp_core.device import resolve_device  # noqa: E402


def demo_models():
    from mlalp_core.models.demo import DEMO_MODEL_NAMES, load_demo_model

    out = []
    for name in DEMO_MODEL_NAMES:
        try:
            model = load_demo_model(name)
        except Exception as exc:  # weights not trained yet
            print(f"# {name}: skipped ({exc})")
            continue
        out.append((name, lambda m=model: m))
    return out


def full_size_models():
    from paper_models import build  # the same calibrated random-weight models as bench/paper_models.py

    return [("ml-gcn (random, 448)", lambda: build("ml-gcn")), ("ml-liw (random, 299)", lambda: build("ml-liw"))]


def timed(fn, dev, repeat):
    best = float("inf")
    out = None
    for _ in range(repeat):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-full", action="store_true", help="only the demo models")
    ap.add_argument("--skip-loop-full", action="store_true", help="no sequential passes for the full-size models")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}")
    hdr = f"{'model':24} {'B':>3} | {'forward/img':>11} {'batched/img':>11} {'loop/img':>10} {'speed-up':>8} {'max rel diff':>12}"
    print(hdr)
    print("-" * len(hdr))
    models = demo_models() + ([] if args.skip_full else full_size_models())
    for name, make in models:
        model = make().to(dev).eval()
        l = model.num_labels
        for b in args.batch:
            x = torch.rand(b, 3, *model.input_size, device=dev)
            target = torch.rand(b, l, device=dev) > 0.5
            fn = lambda z: per_label_bce(model(z), target)  # noqa: E731
            with torch.no_grad():
                t_fwd, _ = timed(lambda: model(x), dev, args.repeat)
            t_b, (_, jb) = timed(lambda: batched_jacobian(fn, x, "batched"), dev, args.repeat)
            loop = not (args.skip_loop_full and "random" in name)
            if loop:
                t_l, (_, jl) = timed(lambda: batched_jacobian(fn, x, "loop"), dev, 1)
                diff = float((jb - jl).abs().max() / jl.abs().max())
                cols = f"{t_l / b * 1e3:8.1f}ms {t_l / t_b:7.1f}x {diff:12.1e}"
            else:
                cols = f"{'-':>10} {'-':>8} {'-':>12}"
            print(f"{name:24} {b:3d} | {t_fwd / b * 1e3:9.1f}ms {t_b / b * 1e3:9.1f}ms {cols}", flush=True)
        model = None  # free it before the next one
        if dev.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
