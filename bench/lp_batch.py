"""Benchmark: a batch's LPs solved together (solve_linf_batch) against one after the other.

Per regime of the sweep (tests/lp_instances.SWEEP) and batch size B: the per-image time of
``solve_linf`` on each LP in turn and of ``solve_linf_batch`` on the stack, their ratio, the
largest relative difference of z between the two (0 = the same optima) and the worst certified
gap. ``--mlalp``: MLA-LP on a random-weight ML-GCN (448x448) at batch ``--mlalp-batch``, the
LPs one at a time and together (MLALP_LP_BATCH=0/1): seconds per image-iteration for the
Jacobian and the LP, and the LP's share of an iteration.

    python bench/lp_batch.py                                   # CPU, d = 100,000, B = 1, 8
    python bench/lp_batch.py --device cuda --sizes 602112 --batches 1 8 32 --mlalp

Speed is measured here, not asserted in tests; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from lp_instances import SWEEP, sweep_instance  # noqa: E402

from mlalp_core.device import resolve_device  # noqa: E402
from mlalp_core.lp import solve_linf, solve_linf_batch  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev: torch.device, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        _sync(dev)
        t0 = time.perf_counter()
        out = fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best, out


class OpCounter(torch.overrides.TorchFunctionMode):
    """Counts torch operations (each launches one or more kernels on a GPU) and among them the
    ones that make the host wait for the device (``.cpu()``, ``float()``, ``bool()``, ``int()``,
    ``.item()``, ``.tolist()``: on a GPU each is a synchronisation). With tiny, launch-bound
    kernels these two numbers, not the arithmetic, set the time. Counted on any device (a proxy
    here on the CPU)."""

    SYNCS = {"cpu", "__float__", "__bool__", "__int__", "item", "tolist"}

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.syncs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if getattr(func, "__name__", "") in self.SYNCS:
            self.syncs += 1
        return func(*args, **(kwargs or {}))


def _syncs(fn) -> tuple[int, int]:
    """(host syncs, torch operations) of one call of fn, on the code paths a GPU takes (row sums
    in one kernel, dual bounds by a sort) whatever the device here."""
    import mlalp_core.lp.batched_newton as batched_newton
    import mlalp_core.lp.problem as problem

    rowsum, defaults = batched_newton._rowsum64, problem.dual_bound.__defaults__
    batched_newton._rowsum64 = lambda x: x.sum(1, dtype=torch.float64)
    problem.dual_bound.__defaults__ = (True,)
    try:
        with OpCounter() as oc:
            fn()
    finally:
        batched_newton._rowsum64, problem.dual_bound.__defaults__ = rowsum, defaults
    return oc.syncs, oc.ops


def regimes(args: argparse.Namespace, dev: torch.device) -> None:
    print(f"{'regime':36} {'l':>3} {'d':>7} {'B':>3} | {'one (s/img)':>11} {'batch (s/img)':>13} {'ratio':>6} "
          f"| {'syncs/img one':>13} {'batch':>6} | {'ops/img one':>11} {'batch':>6} "
          f"| {'max rel dz':>10} {'worst gap':>9} {'passes':>6}", flush=True)
    warm = [sweep_instance(0, args.labels, 3000, seed=0, dtype=torch.float32) for _ in range(2)]
    solve_linf_batch(torch.stack([w[0] for w in warm]).to(dev), torch.stack([w[1] for w in warm]).to(dev))
    solve_linf(warm[0][0].to(dev), warm[0][1].to(dev))  # warm-up: kernels, allocator, HiGHS
    for d in args.sizes:
        for k in args.regimes if args.regimes is not None else range(len(SWEEP)):
            for B in args.batches:
                insts = [sweep_instance(k, args.labels, d, seed=100 + s, dtype=torch.float32) for s in range(B)]
                A = torch.stack([i[0] for i in insts]).to(dev)
                b = torch.stack([i[1] for i in insts]).to(dev)
                lo = hi = None
                if insts[0][2] is not None:
                    lo = torch.stack([i[2] for i in insts]).to(dev)
                    hi = torch.stack([i[3] for i in insts]).to(dev)
                t1, one = _timed(lambda: [solve_linf(A[i], b[i], None if lo is None else lo[i],
                                                     None if hi is None else hi[i]) for i in range(B)], dev, args.repeat)
                t2, many = _timed(lambda: solve_linf_batch(A, b, lo, hi), dev, args.repeat)
                s1, o1 = _syncs(lambda: [solve_linf(A[i], b[i], None if lo is None else lo[i],
                                                    None if hi is None else hi[i]) for i in range(B)])
                s2, o2 = _syncs(lambda: solve_linf_batch(A, b, lo, hi))
                dz = max(abs(o.z - m.z) / max(o.z, 1e-300) for o, m in zip(one, many))
                gap = max(m.gap for m in many)
                passes = max(m.passes for m in many)
                print(f"{SWEEP[k][0][:36]:36} {args.labels:3d} {d:7d} {B:3d} | {t1 / B:11.4f} {t2 / B:13.4f} "
                      f"{t1 / t2:5.2f}x | {s1 / B:13.0f} {s2 / B:6.0f} | {o1 / B:11.0f} {o2 / B:6.0f} "
                      f"| {dz:10.1e} {gap:9.1e} {passes:6d}", flush=True)


def mlalp_share(args: argparse.Namespace, dev: torch.device) -> None:
    from paper_models import build

    from mlalp_core.attacks import MLALP

    model = build("ml-gcn", args.labels).eval().to(dev)
    B = args.mlalp_batch
    x = torch.rand(B, 3, *model.input_size, generator=torch.Generator().manual_seed(0)).to(dev)
    with torch.no_grad():
        probs = model.probabilities(x)
    target = probs >= 0.5
    target[torch.arange(B), probs.argmax(1)] = False  # hide the most confident label
    print(f"\nMLA-LP on a random-weight ML-GCN ({args.labels} labels, 448x448), batch {B}, "
          f"{args.mlalp_iterations} iterations", flush=True)
    print(f"{'LPs':10} | {'s / image-iteration':>19} {'Jacobian':>9} {'LP':>8} {'LP share':>9} | {'iterations':>10}",
          flush=True)
    for flag, label in (("0", "one by one"), ("1", "together")):
        os.environ["MLALP_LP_BATCH"] = flag
        attack = MLALP(model, max_iterations=args.mlalp_iterations)
        attack(x[:1], target[:1].float())  # warm-up (kernels, allocator)
        _sync(dev)
        t0 = time.perf_counter()
        res = attack(x, target.float())
        _sync(dev)
        wall = time.perf_counter() - t0
        steps = [e for t in res.trace for e in t]
        n = len(steps)
        jac = sum(e["jacobian_s"] for e in steps) / n
        lp = sum(e["lp_s"] for e in steps) / n
        print(f"{label:10} | {wall / n:19.4f} {jac:9.4f} {lp:8.4f} {lp / (jac + lp):8.1%} | {n:10d}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--labels", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--regimes", type=int, nargs="+", default=None, help="rows of SWEEP (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each (best time shown)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--mlalp", action="store_true", help="also MLA-LP's LP share on a random-weight ML-GCN")
    ap.add_argument("--mlalp-only", action="store_true")
    ap.add_argument("--mlalp-batch", type=int, default=8)
    ap.add_argument("--mlalp-iterations", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"# torch {torch.__version__}, {name}; load {os.getloadavg()[0]:.1f}", flush=True)
    if not args.mlalp_only:
        regimes(args, dev)
    if args.mlalp or args.mlalp_only:
        mlalp_share(args, dev)


if __name__ == "__main__":
    main()
