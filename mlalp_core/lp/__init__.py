"""Exact l_inf linear programs for MLA-LP.

``solve_linf(A, b, lo=None, hi=None, backend="auto")`` solves

    min ||r||_inf  s.t.  A r <= b   (and lo <= r <= hi, e.g. lo = -x, hi = 1 - x)

and returns an :class:`LPResult` whose ``lower_bound`` is proved by its ``dual`` point and
recomputed in float64 on the original data, so its ``gap`` is certified whatever the backend.

Backends: ``"structured"`` (default for ``"auto"``; exact, exploits l << d, runs on A's device),
``"highs"`` / ``"highs-ipm"`` / ``"highs-ds"`` (the independent reference, full LP, CPU), and
``"mosek"`` (interior point as the authors used; needs a licence file).
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import InvalidInputError
from .problem import certify, prepare
from .result import LPResult

BACKENDS = ("auto", "structured", "highs", "highs-ipm", "highs-ds", "mosek")

__all__ = ["solve_linf", "LPResult", "BACKENDS", "backend_status"]


def backend_status() -> dict[str, tuple[bool, str]]:
    """Which backends can run here, with a reason when one cannot (for menus and `mlalp`)."""
    from .mosek_backend import mosek_available

    return {
        "structured": (True, "exact structured solver (default)"),
        "highs": (True, "HiGHS via SciPy: full LP, slow at image scale"),
        "mosek": mosek_available(),
    }


def _restore(r64: torch.Tensor | None, like, d: int):
    if r64 is None:
        return None
    if isinstance(like, torch.Tensor):
        return r64.to(like.device)
    return r64.cpu().numpy()


def solve_linf(A, b, lo=None, hi=None, backend: str = "auto", tol: float = 1e-9,
               time_limit: float | None = None, drop_zero_rows: bool = False) -> LPResult:
    """Solve min ||r||_inf s.t. A r <= b (lo <= r <= hi). See the module docstring.

    ``tol`` is the relative gap at which the structured solver stops (its result reports the
    certified gap it reached). ``time_limit`` applies to HiGHS. ``drop_zero_rows``: solve without
    all-zero rows of A even where their b < 0 (the MLA-LP authors' rule; by default such a row
    makes the LP infeasible, which is exact). On the CPU it runs with
    :func:`mlalp_core.device.lp_cpu_threads` torch threads (1 unless ``MLALP_LP_THREADS`` says).
    """
    if isinstance(A, torch.Tensor) and A.device.type != "cpu":
        return _solve_linf(A, b, lo, hi, backend, tol, time_limit, drop_zero_rows)
    from ..device import cpu_threads, lp_cpu_threads

    with cpu_threads(lp_cpu_threads()):
        return _solve_linf(A, b, lo, hi, backend, tol, time_limit, drop_zero_rows)


def _solve_linf(A, b, lo, hi, backend: str, tol: float, time_limit: float | None,
                drop_zero_rows: bool) -> LPResult:
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown LP backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    t0 = time.perf_counter()
    prep = prepare(A, b, lo, hi, drop_zero_rows)
    l, d, dev = prep.l, prep.d, prep.device
    name = "structured" if backend == "auto" else backend

    if prep.trivial == "zero":
        r = torch.zeros(d, dtype=torch.float64, device=dev)
        return LPResult(_restore(r, A, d), 0.0, "optimal", prep.message,
                        dual=_restore(torch.zeros(l, dtype=torch.float64, device=dev), A, l),
                        lower_bound=0.0, max_violation=0.0, backend=name, time_s=time.perf_counter() - t0)
    if prep.trivial == "infeasible":
        return LPResult(None, math.inf, "infeasible", prep.message, dual=_restore(prep.farkas, A, l),
                        lower_bound=math.inf, backend=name, time_s=time.perf_counter() - t0)

    P = prep.scaled
    assert P is not None  # prepared: neither trivial case
    if name == "structured":
        from .structured import solve_structured

        sol = solve_structured(P, tol=tol)
    elif name.startswith("highs"):
        from .highs_backend import solve_highs

        sol = solve_highs(P, method=name if name != "highs" else "highs", time_limit=time_limit)
    else:
        from .mosek_backend import solve_mosek

        sol = solve_mosek(P)

    # Map back: rho -> r, scaled dual -> Lagrange multipliers of the original rows.
    lam = torch.zeros(l, dtype=torch.float64, device=dev)
    lam[P.rows] = sol.lam.to(dev) / P.row_norm
    if sol.status == "infeasible":
        return LPResult(None, math.inf, "infeasible", sol.message, dual=_restore(lam, A, l), lower_bound=math.inf,
                        backend=name, iterations=sol.iterations, passes=sol.passes,
                        time_s=time.perf_counter() - t0, info=sol.info)
    if sol.status != "optimal" or sol.rho is None:
        return LPResult(None, math.inf, "failed", sol.message, dual=_restore(lam, A, l), backend=name,
                        iterations=sol.iterations, passes=sol.passes, time_s=time.perf_counter() - t0, info=sol.info)
    r = torch.zeros(d, dtype=torch.float64, device=dev)
    if P.cols is None:
        r = sol.rho.to(dev) * P.s
    else:
        r[P.cols] = sol.rho.to(dev) * P.s
    lower, viol = certify(prep, sol.rho.to(dev), sol.lam.to(dev), r)
    z = float(r.abs().max())
    return LPResult(_restore(r, A, d), z, "optimal", sol.message, dual=_restore(lam, A, l),
                    lower_bound=min(lower, z),
                    max_violation=viol, backend=name, iterations=sol.iterations, passes=sol.passes,
                    time_s=time.perf_counter() - t0, info=sol.info)
