"""Benchmark: the structured exact LP solver against Clarabel and HiGHS, side by side in one run.

Instances of the MLA-LP shape (l = 20 heavy-tailed correlated rows; d = 27,648 demo,
268,203 = 3x299x299, 602,112 = 3x448x448; b with 1 and 3 negative entries; with and without the
[0,1] box). For each: time, z, relative difference to the best reference z, certified gap (ours),
and max violation of A r <= b relative to max|b|.

    python bench/lp.py                       # all sizes, CPU, Clarabel on every instance
    python bench/lp.py --sizes 27648 --highs # add HiGHS interior point (time-capped)
    python bench/lp.py --device cuda         # the structured solver on the GPU (references on CPU)

Speed is measured here, not asserted in tests; the machine may be shared, so compare the
ratios of one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lp_instances import mlalp_instance  # noqa: E402

from mlalp_core.device import resolve_device  # noqa: E402
from mlalp_core.lp import solve_linf  # noqa: E402


def clarabel_solve(A: np.ndarray, b: np.ndarray, lo=None, hi=None) -> tuple[float, np.ndarray, float]:
    """min z s.t. A r <= b, |r| <= z (box), through Clarabel's own API (no modelling layer)."""
    import clarabel

    l, d = A.shape
    n = d + 1
    I = sp.identity(d, format="csc")
    one = sp.csc_matrix(np.ones((d, 1)))
    blocks = [sp.hstack([sp.csc_matrix(A), sp.csc_matrix((l, 1))]), sp.hstack([I, -one]), sp.hstack([-I, -one])]
    rhs = [b, np.zeros(d), np.zeros(d)]
    if lo is not None:
        blocks += [sp.hstack([I, sp.csc_matrix((d, 1))]), sp.hstack([-I, sp.csc_matrix((d, 1))])]
        rhs += [hi, -lo]
    M = sp.vstack(blocks, format="csc")
    q = np.zeros(n)
    q[-1] = 1.0
    P = sp.csc_matrix((n, n))
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    t0 = time.perf_counter()
    solver = clarabel.DefaultSolver(P, q, M, np.concatenate(rhs), [clarabel.NonnegativeConeT(M.shape[0])], settings)
    sol = solver.solve()
    dt = time.perf_counter() - t0
    x = np.array(sol.x)
    return float(np.abs(x[:d]).max()), x[:d], dt


def violation(A: np.ndarray, b: np.ndarray, r: np.ndarray) -> float:
    return float(max((A.astype(np.float64) @ r - b).max(), 0.0) / np.abs(b).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[27648, 268203, 602112])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-clarabel", action="store_true")
    ap.add_argument("--highs", action="store_true", help="also run HiGHS's interior point")
    ap.add_argument("--highs-time-limit", type=float, default=120.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of the structured solver (best time shown)")
    ap.add_argument("--check-cpu", action="store_true", help="with --device cuda: also solve on the CPU and compare z")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    print(f"# torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}")
    hdr = (f"{'d':>7} {'box':>4} {'neg':>3} | {'ours s':>8} {'z':>11} {'gap':>8} {'viol':>8} {'passes':>6} | "
           f"{'clarabel s':>10} {'rel diff':>8} {'viol':>8} | {'highs s':>8} {'rel diff':>8} | {'speed-up':>8}")
    print(hdr)
    print("-" * len(hdr))
    for d in args.sizes:
        for box in (False, True):
            for neg in (1, 3):
                A64, b, lo, hi = mlalp_instance(20, d, neg, seed=d + neg, box=box, dtype=torch.float64)
                A = A64.float()  # Jacobians are float32
                Ad = A.to(dev)
                lod = lo.to(dev) if lo is not None else None
                hid = hi.to(dev) if hi is not None else None
                best = float("inf")
                res = None
                for _ in range(args.repeat):
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    res = solve_linf(Ad, b.to(dev), lod, hid)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    best = min(best, time.perf_counter() - t0)
                An = A.double().numpy()
                bn = b.numpy()
                r = res.r.cpu().numpy() if isinstance(res.r, torch.Tensor) else res.r
                v_ours = violation(An, bn, r)
                c_cols = ["-"] * 3
                c_time = None
                if not args.no_clarabel:
                    zc, rc, c_time = clarabel_solve(An, bn, lo.numpy() if lo is not None else None,
                                                    hi.numpy() if hi is not None else None)
                    c_cols = [f"{c_time:10.2f}", f"{(res.z - zc) / zc:8.1e}", f"{violation(An, bn, rc):8.1e}"]
                h_cols = ["-", "-"]
                if args.highs:
                    t0 = time.perf_counter()
                    try:
                        rh = solve_linf(A, b, lo, hi, backend="highs-ipm", time_limit=args.highs_time_limit)
                        ht = time.perf_counter() - t0
                        h_cols = [f"{ht:8.1f}", f"{(res.z - rh.z) / rh.z:8.1e}" if rh.ok else rh.status]
                    except Exception as exc:  # HiGHS's time limit, or a failure
                        h_cols = [f">{args.highs_time_limit:.0f}",
                                  "capped" if "limit" in str(exc) else type(exc).__name__[:8]]
                speed = f"{c_time / best:8.0f}x" if c_time else "-"
                if args.check_cpu and dev.type != "cpu":
                    rc = solve_linf(A, b, lo, hi)
                    c_cols[1] = f"{(res.z - rc.z) / rc.z:8.1e}"
                    c_cols[0] = "(cpu ours)"
                print(f"{d:7d} {str(box):>4} {neg:3d} | {best:8.3f} {res.z:11.6g} {res.gap:8.1e} {v_ours:8.1e} "
                      f"{res.passes:6d} | {c_cols[0]:>10} {c_cols[1]:>8} {c_cols[2]:>8} | {h_cols[0]:>8} {h_cols[1]:>8} | "
                      f"{speed:>8}", flush=True)


if __name__ == "__main__":
    main()
