"""Small dense LPs solved with HiGHS, then polished to an exact float64 vertex.

The restricted masters of the structured solver have a few hundred columns. HiGHS's simplex
returns a vertex whose values can violate the master's constraints by ~1e-7 after its internal
scaling; re-solving the optimal basis's square system in float64 recovers the vertex (and its
duals) to round-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

INF = highspy.kHighsInf


@dataclass
class TinyLPResult:
    status: str  # optimal | infeasible | failed
    x: np.ndarray | None
    row_dual: np.ndarray | None  # HiGHS sign convention (<= 0 for a binding upper row bound when minimising)
    message: str
    polished: bool = False


def _finite(a: np.ndarray) -> np.ndarray:
    return np.clip(a, -INF, INF)


_QUIET = False


def _new_highs() -> highspy.Highs:
    """A silent HiGHS instance; the first one's licence banner goes to /dev/null, not stdout."""
    global _QUIET
    if _QUIET:
        h = highspy.Highs()
    else:
        import os
        import sys

        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 1)
                h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        _QUIET = True
    h.silent()
    return h


def solve_tiny_lp(c: np.ndarray, A: sp.spmatrix | np.ndarray, row_lo: np.ndarray, row_hi: np.ndarray,
                  col_lo: np.ndarray, col_hi: np.ndarray, tol: float = 1e-10) -> TinyLPResult:
    """min c.x s.t. row_lo <= A x <= row_hi, col_lo <= x <= col_hi (dense-ish, small)."""
    A = sp.csc_matrix(A)
    nrow, ncol = A.shape
    lp = highspy.HighsLp()
    lp.num_col_ = ncol
    lp.num_row_ = nrow
    lp.col_cost_ = np.asarray(c, dtype=np.float64)
    lp.col_lower_ = _finite(np.asarray(col_lo, dtype=np.float64))
    lp.col_upper_ = _finite(np.asarray(col_hi, dtype=np.float64))
    lp.row_lower_ = _finite(np.asarray(row_lo, dtype=np.float64))
    lp.row_upper_ = _finite(np.asarray(row_hi, dtype=np.float64))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data.astype(np.float64)
    # The masters come scaled by the caller (rows of unit l1 norm, r in units of a bound on z):
    # HiGHS's own scaling only hurts them (measured on two masters: 2,011 -> 1,575 iterations,
    # 0.96 -> 0.20 s; and a dual simplex that cycled past 164,000 iterations at 1e-10 -> 845,
    # 0.12 s). Each attempt is capped; the next ones bring back HiGHS's scaling, the primal
    # simplex, then looser tolerances; the polish below restores exactness.
    cap = 5 * (nrow + ncol) + 1000
    for scale, strategy, attempt_tol in ((0, None, tol), (None, None, tol), (None, 4, tol),
                                         (None, None, max(tol, 1e-9)), (None, None, max(tol, 1e-7))):
        h = _new_highs()
        h.setOptionValue("solver", "simplex")
        if scale is not None:
            h.setOptionValue("simplex_scale_strategy", scale)  # 0: no scaling
        if strategy is not None:
            h.setOptionValue("simplex_strategy", strategy)  # 4: primal simplex
        h.setOptionValue("primal_feasibility_tolerance", attempt_tol)
        h.setOptionValue("dual_feasibility_tolerance", attempt_tol)
        h.setOptionValue("simplex_iteration_limit", cap)
        h.passModel(lp)
        h.run()
        status = h.getModelStatus()
        # optimal: done; infeasible: believed once HiGHS's scaling confirms it; anything else
        # (iteration cap, "unknown" after an unscaled run): the next attempt
        if status == highspy.HighsModelStatus.kOptimal or (
                status == highspy.HighsModelStatus.kInfeasible and scale is None):
            break
    if status == highspy.HighsModelStatus.kInfeasible:
        return TinyLPResult("infeasible", None, None, "infeasible")
    if status != highspy.HighsModelStatus.kOptimal:
        return TinyLPResult("failed", None, None, h.modelStatusToString(status))
    sol = h.getSolution()
    x = np.array(sol.col_value)
    y = np.array(sol.row_dual)
    polished = False
    try:
        x2, y2 = _polish(h, A, c, lp)
        if x2 is not None and y2 is not None:
            x, y, polished = x2, y2, True
    except (np.linalg.LinAlgError, RuntimeError):
        pass
    return TinyLPResult("optimal", x, y, "optimal", polished)


def _polish(h: highspy.Highs, A: sp.csc_matrix, c: np.ndarray, lp) -> tuple[np.ndarray | None, np.ndarray | None]:
    basis = h.getBasis()
    if not basis.valid:
        return None, None
    cs = np.array([int(s) for s in basis.col_status])
    rs = np.array([int(s) for s in basis.row_status])
    LOWER, BASIC, UPPER = int(highspy.HighsBasisStatus.kLower), int(highspy.HighsBasisStatus.kBasic), int(highspy.HighsBasisStatus.kUpper)
    col_lo, col_hi = np.array(lp.col_lower_), np.array(lp.col_upper_)
    row_lo, row_hi = np.array(lp.row_lower_), np.array(lp.row_upper_)
    bc = np.flatnonzero(cs == BASIC)
    nr = np.flatnonzero(rs != BASIC)
    if bc.size != nr.size:
        return None, None
    x = np.zeros(A.shape[1])
    x[cs == LOWER] = col_lo[cs == LOWER]
    x[cs == UPPER] = col_hi[cs == UPPER]
    if not np.isfinite(x[cs != BASIC]).all():
        return None, None
    act = np.where(rs[nr] == UPPER, row_hi[nr], row_lo[nr])
    if not np.isfinite(act).all():
        return None, None
    Ar = sp.csr_matrix(A)
    nbc = np.flatnonzero(cs != BASIC)
    rhs = act - Ar[nr][:, nbc] @ x[nbc]
    B = sp.csc_matrix(Ar[nr][:, bc])
    y = np.zeros(A.shape[0])
    if bc.size:
        lu = spla.splu(B)
        x[bc] = lu.solve(rhs)
        # Duals: B^T y_nr = c_B, y = 0 on basic rows.
        y[nr] = lu.solve(np.asarray(c, dtype=np.float64)[bc], trans="T")
    # Accept only a vertex at least as feasible as HiGHS's own.
    act_all = Ar @ x
    scale = 1.0 + np.abs(x).max()
    viol = max(np.max(np.maximum(row_lo - act_all, act_all - row_hi), initial=0.0),
               np.max(np.maximum(col_lo - x, x - col_hi), initial=0.0))
    sol = h.getSolution()
    x0 = np.array(sol.col_value)
    act0 = Ar @ x0
    viol0 = max(np.max(np.maximum(row_lo - act0, act0 - row_hi), initial=0.0),
                np.max(np.maximum(col_lo - x0, x0 - col_hi), initial=0.0))
    if not np.isfinite(x).all() or viol > max(viol0, 1e-14 * scale):
        return None, None
    return x, y
