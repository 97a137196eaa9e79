"""Benchmark: the LP solver with 1 and 2 torch threads on the CPU, interleaved, in one run.

    python bench/lp_threads.py            # d = 27,648 / 268,203 / 602,112, 3 attacked rows

It prints the machine's load average first: the answer depends on it (a second thread waits on a
core another process holds). mlalp_core.device.lp_cpu_threads documents the choice made from it.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lp_instances import regime_instance  # noqa: E402

from mlalp_core.lp import solve_linf  # noqa: E402


def main() -> None:
    print(f"# load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs; best of 2 per thread count, interleaved")
    print(f"{'d':>8} {'passes':>6} {'1 thread s':>11} {'2 threads s':>12} {'ratio 2/1':>10}")
    for d in (27648, 268203, 602112):
        A, b, lo, hi = regime_instance(l=20, d=d, attacked=3, seed=1)
        A = A.float()
        best = {1: float("inf"), 2: float("inf")}
        passes = 0
        for _ in range(2):
            for th in (1, 2):
                os.environ["MLALP_LP_THREADS"] = str(th)
                t0 = time.perf_counter()
                r = solve_linf(A, b, lo, hi, tol=1e-6)
                best[th] = min(best[th], time.perf_counter() - t0)
                passes = r.passes
        print(f"{d:8d} {passes:6d} {best[1]:11.3f} {best[2]:12.3f} {best[2] / best[1]:10.2f}", flush=True)


if __name__ == "__main__":
    main()
