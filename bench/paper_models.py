"""Forward and per-label-loss Jacobian time per image of the paper's full-size models.

ML-GCN (ResNet-101, 448x448) and ML-LIW (Inception-v3, 299x299) at random weights (BatchNorm
statistics calibrated on random images, so activations have a trained network's scale and no
denormal floats distort CPU timings). The Jacobian is the one MLA-LP needs: the 20 per-label BCE
losses w.r.t. the pixels, by :func:`mlalp_core.attacks.jacobian.batched_jacobian` ("batched": one forward
and one vectorised backward; "loop": one backward per label, the authors' way minus their
duplicate pass). Median of ``--repeats`` runs after one warm-up.

    .venv/bin/python bench/paper_models.py                # cpu, batch 1
    .venv/bin/python bench/paper_models.py --device cuda --batch 1 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlalp_core.attacks.jacobian import batched_jacobian  # noqa: E402
from mlalp_core.attacks.losses import per_label_bce  # noqa: E402
from mlalp_core.device import describe_device, resolve_device  # noqa: E402
from mlalp_core.training.paper import calibrate_batchnorm  # noqa: E402


def build(name: str, labels: int = 20) -> torch.nn.Module:
    """A random-weight full-size model; ML-GCN with ``labels`` = 80 has COCO's label set."""
    import numpy as np

    torch.manual_seed(0)
    if name == "ml-gcn":
        from mlalp_core.data.coco import COCO_CLASSES
        from mlalp_core.data.voc import VOC_CLASSES
        from mlalp_core.models.ml_gcn import MLGCN

        model = MLGCN(np.random.default_rng(0).standard_normal((labels, 300)).astype(np.float32),
                      np.eye(labels, dtype=np.float32), label_names=COCO_CLASSES if labels == 80 else VOC_CLASSES)
        trunk = model.features
    else:
        from mlalp_core.models.ml_liw import MLLIW

        model = MLLIW()
        trunk = model.trunk
    calibrate_batchnorm(trunk, model.normalize(torch.rand(2, 3, *model.input_size)))
    return model.eval()


def timed(fn, device: torch.device, repeats: int) -> float:
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    once()  # warm-up (allocator, cuDNN/oneDNN kernel choice)
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=["ml-gcn", "ml-liw"])
    ap.add_argument("--batch", nargs="+", type=int, default=[1])
    ap.add_argument("--methods", nargs="*", default=["batched", "loop"], choices=["batched", "loop"],
                    help="Jacobian methods to time (none: forward only)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    print(f"device: {describe_device(dev)}; torch {torch.__version__}; median of {args.repeats} after a warm-up")
    header = f"{'model':<7} {'input':>7} {'batch':>5} {'forward s/img':>14} " + " ".join(
        f"{'jacobian ' + m + ' s/img':>22}" for m in args.methods)
    print(header)
    print("-" * len(header))
    for name in args.models:
        model = build(name).to(dev)
        h, w = model.input_size
        for b in args.batch:
            x = torch.rand(b, 3, h, w, device=dev)
            target = torch.zeros(b, model.num_labels, dtype=torch.bool, device=dev)
            target[:, :2] = True
            with torch.no_grad():
                fwd = timed(lambda: model(x), dev, args.repeats) / b
            cells = []
            for method in args.methods:
                try:
                    jac = timed(lambda: batched_jacobian(lambda z: per_label_bce(model(z), target), x, method=method),
                                dev, args.repeats) / b
                    cells.append(f"{jac:>22.3f}")
                except (RuntimeError, MemoryError) as exc:  # out of memory on a small machine
                    cells.append(f"{'failed: ' + type(exc).__name__:>22}")
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            print(f"{name:<7} {f'{h}x{w}':>7} {b:>5} {fwd:>14.3f} " + " ".join(cells), flush=True)
        model = None  # free it before the next one


if __name__ == "__main__":
    main()
