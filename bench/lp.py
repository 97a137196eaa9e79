"""Benchmark: the structured exact LP solver against Clarabel and HiGHS, side by side in one run.

Instances of the MLA-LP shape (l = 20 heavy-tailed correlated rows; d = 27,648 demo,
268,203 = 3x299x299, 602,112 = 3x448x448; b with 1 and 3 negative entries; with and without the
[0,1] box). For each: time, z, relative difference to the best reference z, certified gap (ours),
and max violation of A r <= b relative to max|b|.

    python bench/lp.py                       # all sizes, CPU, Clarabel on every instance
    python bench/lp.py --sizes 27648 --highs # add HiGHS interior point (time-capped)
    python bench/lp.py --device cuda         # the structured solver on the GPU (references on CPU)
    python bench/lp.py --sweep               # the regimes that make the LP hard, and real Jacobians
    python bench/lp.py --sweep --sizes 602112 --labels 80   # COCO's 80 labels at 448x448
    python bench/lp.py --sweep --floor --sizes 602112       # with each row's time per pass against
                                                            # the memory-bandwidth floor of a pass

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

from lp_instances import SWEEP, mlalp_instance, sweep_instance  # noqa: E402

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


def pass_floor(A: torch.Tensor, repeat: int = 15) -> dict[str, float]:
    """The floor of one pass over A (l x d) on this machine: plain products with the same A, in
    float32 (A v and A^T w, what the search's passes are) and in float64 as the solver's exact
    passes do them (a float32 A converted block by block, :func:`mlalp_core.lp.problem.blocks64`).
    Median seconds of ``repeat`` runs each; memory-bound, so they say how near the bandwidth
    limit a solve runs."""
    from mlalp_core.lp.problem import Scaled

    l, d = A.shape
    A = A.float().contiguous()
    P = Scaled(M=A, inv_norm=torch.ones(l, dtype=torch.float64), beta=torch.zeros(l, dtype=torch.float64),
               lo=None, hi=None, rows=torch.arange(l), cols=None, row_norm=torch.ones(l, dtype=torch.float64), s=1.0)
    g = torch.Generator().manual_seed(0)
    v32, w32 = torch.randn(d, generator=g), torch.randn(l, generator=g)
    v64, w64 = v32.double(), w32.double()

    def median(f) -> float:
        f()
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    out = {"f32_Av": median(lambda: A @ v32), "f32_ATw": median(lambda: w32 @ A),
           "f64_Av": median(lambda: P.matvec(v64, exact=True)), "f64_ATw": median(lambda: P.rmatvec(w64, exact=True))}
    out["f32"] = (out["f32_Av"] + out["f32_ATw"]) / 2
    out["f64"] = (out["f64_Av"] + out["f64_ATw"]) / 2
    out["GBps_f32"] = A.numel() * 4 / out["f32"] / 1e9
    return out


def _print_floor(fl: dict[str, float], l: int, d: int) -> None:
    print(f"# floor of a pass over A ({l} x {d}, float32 as Jacobians are), median of 15: float32 "
          f"A v {fl['f32_Av'] * 1e3:.2f} ms, A^T w {fl['f32_ATw'] * 1e3:.2f} ms ({fl['GBps_f32']:.0f} GB/s); float64 "
          f"(the exact passes, A converted in blocks) A v {fl['f64_Av'] * 1e3:.2f} ms, A^T w {fl['f64_ATw'] * 1e3:.2f} ms; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)


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
    ap.add_argument("--sweep", action="store_true", help="the regime sweep (see SWEEP) instead of the base instances")
    ap.add_argument("--labels", type=int, nargs="+", default=[20], help="l for the sweep (20: VOC, 80: COCO)")
    ap.add_argument("--real", action="store_true", help="with --sweep: also LPs from real Jacobians")
    ap.add_argument("--regimes", type=int, nargs="+", default=None,
                    help="with --sweep: only these rows of SWEEP (0-based), e.g. to time l = 80 on a few")
    ap.add_argument("--real-only-full", action="store_true",
                    help="with --real: skip the demo models' LPs (only the full-size random-weight ones)")
    ap.add_argument("--floor", action="store_true",
                    help="the floor of a pass over A (plain float32 and float64 products); with --sweep, each "
                         "row's time per pass and its ratio to the floor of its passes")
    args = ap.parse_args()
    if args.sweep:
        sweep(args)
        return
    if args.floor:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}")
        for d in args.sizes:
            for l in args.labels:
                A, _, _, _ = mlalp_instance(l, d, 1, seed=d, dtype=torch.float32)
                _print_floor(pass_floor(A), l, d)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["MLALP_LP_THREADS"] = str(args.threads)  # solve_linf's own choice otherwise (1)
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


def _row(label: str, A: torch.Tensor, b: torch.Tensor, lo, hi, args, dev, floor: dict | None = None) -> None:
    Ad = A.float().to(dev)
    best, res = float("inf"), None
    for _ in range(args.repeat):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = solve_linf(Ad, b.to(dev), None if lo is None else lo.to(dev), None if hi is None else hi.to(dev))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    load = os.getloadavg()[0]
    cols = ["-", "-", "-"]
    if not args.no_clarabel:
        An = A.double().numpy()
        zc, _, ct = clarabel_solve(An, b.numpy(), None if lo is None else lo.numpy(), None if hi is None else hi.numpy())
        cols = [f"{ct:9.2f}", f"{(res.z - zc) / zc:8.1e}", f"{ct / best:7.0f}x"]
    exact = res.info.get("exact_passes", 0)
    fcols = ["-", "-"]
    if floor is not None and res.passes:
        # the floor of this solve: its float32 passes and its float64 ones at the floor's speeds
        floor_s = (res.passes - exact) * floor["f32"] + exact * floor["f64"]
        fcols = [f"{best / res.passes * 1e3:7.2f}", f"{best / floor_s:6.1f}x"]
    print(f"{label:38} {A.shape[0]:3d} {A.shape[1]:7d} | {res.status:>9} {res.z:9.4g} {res.gap:8.1e} "
          f"{res.passes:3d} ({exact:2d}) {best:8.3f} {fcols[0]:>7} {fcols[1]:>7} | {cols[0]:>9} {cols[1]:>8} {cols[2]:>8} "
          f"| {load:4.1f}", flush=True)


def _real_lps(d_models: list[str], labels: tuple[int, ...] = (20,)):
    """LPs from real Jacobians: the demo models on gallery scenes (hide-one), and random-weight
    full-size ML-LIW / ML-GCN (outputs near 0.5: every row nearly tight)."""
    import mlalp_core as ml
    from mlalp_core.attacks.jacobian import batched_jacobian
    from mlalp_core.attacks.losses import bce_at_threshold, per_label_bce

    def lp_of(model, x, target, loop=False):
        if loop:  # one backward per label: the batched graph of 80 labels at 448x448 is too large here
            rows, losses = [], None
            for j in range(model.num_labels):
                z = x.clone().requires_grad_(True)
                loss = per_label_bce(model(z), target)
                (g,) = torch.autograd.grad(loss[0, j], z)
                rows.append(g.reshape(-1))
                losses = loss.detach()
            jac0, loss = torch.stack(rows), losses
        else:
            loss, jac = batched_jacobian(lambda z: per_label_bce(model(z), target), x)
            jac0 = jac[0].reshape(model.num_labels, -1)
        b = (bce_at_threshold(target, 0.5, dtype=torch.float64) - loss.double())[0]
        return jac0, b

    data = ml.load_dataset("demo")
    for name in () if "demo" not in d_models else ("demo-gcn", "demo-liw"):
        model = ml.load_model(name, device="cpu")
        for i in (2, 9):
            x = data.image(i, model.input_size)[None]
            t = ml.hide_one(data.labels()[i:i + 1], example_ids=[i])
            A, b = lp_of(model, x, t)
            yield f"{name}, scene {i}", A, b
    if "full" in d_models:
        from paper_models import build

        names = [("ml-liw", 20), ("ml-gcn", 20)] if 20 in labels else []
        names += [("ml-gcn", 80)] if 80 in labels else []
        for name, l in names:
            model = build(name, l).eval()
            x = torch.rand(1, 3, *model.input_size, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                probs = model.probabilities(x)
            # hide the most confident label the model predicts (random weights: outputs near 0.5,
            # so every row is nearly tight); the others keep their prediction
            t = probs >= 0.5
            j = int(probs[0].argmax())
            t[0, j] = False
            A, b = lp_of(model, x, t, loop=l > 20)
            yield f"{name} ({l} labels), random weights", A, b


def sweep(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["MLALP_LP_THREADS"] = str(args.threads)  # solve_linf's own choice otherwise (1)
    dev = resolve_device(args.device)
    from mlalp_core.device import lp_cpu_threads

    print(f"# torch {torch.__version__}, device {dev}, LP threads {lp_cpu_threads()}, load "
          f"{os.getloadavg()[0]:.2f}")
    hdr = (f"{'regime':38} {'l':>3} {'d':>7} | {'status':>9} {'z':>9} {'gap':>8} {'passes (f64)':>12} {'ours s':>8} "
           f"{'ms/pass':>7} {'floor':>7} | {'clarabel s':>9} {'rel diff':>8} {'ratio':>8} | load")
    print("# passes: over A in all, (f64) of them exact; ms/pass: ours s / passes; floor: ours s / the floor of "
          "those passes (see the floor line)")
    print(hdr)
    print("-" * len(hdr))
    def floor_of(A: torch.Tensor) -> dict | None:
        """The floor measured just before the row (on a shared machine it moves with the load)."""
        if not args.floor or dev.type != "cpu":
            return None
        fl = pass_floor(A)
        _print_floor(fl, *A.shape)
        return fl

    for d in args.sizes:
        for l in args.labels:
            for k, (label, _) in enumerate(SWEEP):
                if args.regimes is not None and k not in args.regimes:
                    continue
                A, b, lo, hi = sweep_instance(k, l, d, seed=d + l)
                _row(label, A, b, lo, hi, args, dev, floor_of(A))
    if args.real:
        which = ([] if args.real_only_full else ["demo"]) + (["full"] if max(args.sizes) >= 268203 else [])
        for label, A, b in _real_lps(which, tuple(args.labels)):
            _row(label, A, b, None, None, args, dev, floor_of(A))
    print(f"# load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
