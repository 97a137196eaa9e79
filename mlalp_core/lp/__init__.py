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
from typing import TYPE_CHECKING

import torch

from ..errors import InvalidInputError
from .problem import CertificateError, Prepared, certify, prepare
from .result import LPResult

if TYPE_CHECKING:
    from .solution import Solution

BACKENDS = ("auto", "structured", "highs", "highs-ipm", "highs-ds", "mosek")

__all__ = ["solve_linf", "solve_linf_batch", "LPResult", "BACKENDS", "backend_status", "CertificateError"]


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
    name = "structured" if backend == "auto" else backend

    done = _trivial(prep, name, A, t0)
    if done is not None:
        return done
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

    return _result(prep, sol, name, A, t0)


def solve_linf_batch(A: torch.Tensor, b: torch.Tensor, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None,
                     backend: str = "auto", tol: float = 1e-9, drop_zero_rows: bool = False) -> list[LPResult]:
    """:func:`solve_linf` for a stack of LPs, A (B, l, d), b (B, l), lo/hi (B, d) or None.

    With the structured backend the LPs are searched together (:mod:`.batched`: one set of
    kernels over the stack, host synchronisations per iteration of the whole batch, which is
    what a GPU needs) and each then gets the one-image exact finish; every answer is certified
    as :func:`solve_linf`'s. Other backends solve one LP after the other. Each result's
    ``time_s`` is its share of the batch's time (the whole in ``info["batch_time_s"]``).
    """
    if not isinstance(A, torch.Tensor) or A.dim() != 3:
        raise InvalidInputError(f"A must be a tensor (B, l, d) for a batch of LPs, got "
                                f"{tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__}")
    B, l, d = A.shape
    b = torch.as_tensor(b)
    if b.shape != (B, l):
        raise InvalidInputError(f"b must have shape ({B}, {l}) (one row per LP), got {tuple(b.shape)}")
    if (lo is None) != (hi is None):
        raise InvalidInputError("give both lo and hi for a batch (or neither)")
    for name_, t in (("lo", lo), ("hi", hi)):
        if t is not None and tuple(t.shape) != (B, d):
            raise InvalidInputError(f"{name_} must have shape ({B}, {d}), got {tuple(t.shape)}")
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown LP backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend not in ("auto", "structured") or B == 1:
        return [solve_linf(A[i], b[i], None if lo is None else lo[i], None if hi is None else hi[i], backend, tol,
                           drop_zero_rows=drop_zero_rows) for i in range(B)]
    if A.device.type != "cpu":
        return _solve_batch(A, b, lo, hi, tol, drop_zero_rows)
    from ..device import cpu_threads, lp_cpu_threads

    with cpu_threads(lp_cpu_threads()):
        return _solve_batch(A, b, lo, hi, tol, drop_zero_rows)


def _solve_batch(A: torch.Tensor, b: torch.Tensor, lo, hi, tol: float, drop_zero_rows: bool) -> list[LPResult]:
    from .batched import solve_batch

    t0 = time.perf_counter()
    B = A.shape[0]
    A = A.detach()
    preps = [prepare(A[i], b[i], None if lo is None else lo[i], None if hi is None else hi[i], drop_zero_rows)
             for i in range(B)]
    out: list[LPResult | None] = [_trivial(p, "structured", A[i], t0) for i, p in enumerate(preps)]
    todo = [i for i in range(B) if out[i] is None]
    if todo:
        sub = A if len(todo) == B else A[todo]
        if sub.dtype not in (torch.float32, torch.float64):
            sub = sub.double()
        sols = solve_batch([preps[i] for i in todo], sub, tol=tol)
        for i, sol in zip(todo, sols):
            out[i] = _result(preps[i], sol, "structured", A[i], t0)
    total = time.perf_counter() - t0
    results = [r for r in out if r is not None]
    for r in results:
        r.time_s = total / B
        r.info["batch_time_s"] = total
    return results


def _trivial(prep: Prepared, name: str, A, t0: float) -> LPResult | None:
    """The answer found while preparing (b >= 0: r = 0; a zero row with b < 0: infeasible), if any."""
    l, d, dev = prep.l, prep.d, prep.device
    if prep.trivial == "zero":
        r = torch.zeros(d, dtype=torch.float64, device=dev)
        return LPResult(_restore(r, A, d), 0.0, "optimal", prep.message,
                        dual=_restore(torch.zeros(l, dtype=torch.float64, device=dev), A, l),
                        lower_bound=0.0, max_violation=0.0, backend=name, time_s=time.perf_counter() - t0)
    if prep.trivial == "infeasible":
        return LPResult(None, math.inf, "infeasible", prep.message, dual=_restore(prep.farkas, A, l),
                        lower_bound=math.inf, backend=name, time_s=time.perf_counter() - t0)
    return None


def _result(prep: Prepared, sol: Solution, name: str, A, t0: float) -> LPResult:
    """Map a backend's scaled solution back (rho -> r, scaled dual -> the original rows'
    multipliers) and certify it in float64 on the original data."""
    P = prep.scaled
    assert P is not None
    l, d, dev = prep.l, prep.d, prep.device
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
    lower, viol = certify(prep, sol.rho.to(dev), sol.lam.to(dev), r, sol.known)
    z = max(float(r.max()), -float(r.min()))
    return LPResult(_restore(r, A, d), z, "optimal", sol.message, dual=_restore(lam, A, l),
                    lower_bound=lower,
                    max_violation=viol, backend=name, iterations=sol.iterations, passes=sol.passes,
                    time_s=time.perf_counter() - t0, info=sol.info)
