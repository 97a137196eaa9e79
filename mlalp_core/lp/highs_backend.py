"""HiGHS on the full LP: the independent reference the structured solver is tested against.

Vectorised construction (no per-column Python loops); exact but slow at image scale (HiGHS's
interior point needed more than 900 s at d = 268k on a 2-core CPU).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize
import scipy.sparse as sp
import torch

from ..errors import SolverError
from .problem import Scaled
from .solution import Solution


def full_lp(P: Scaled):
    """(c, A_ub, b_ub, bounds) of  min z s.t. A rho <= beta, rho - z <= 0, -rho - z <= 0, box.

    Variable order: rho (n), z.
    """
    A = P.dense64().cpu().numpy()
    m, n = A.shape
    I = sp.identity(n, format="csr")
    ones = sp.csr_matrix(np.ones((n, 1)))
    A_ub = sp.vstack([
        sp.hstack([sp.csr_matrix(A), sp.csr_matrix((m, 1))]),
        sp.hstack([I, -ones]),
        sp.hstack([-I, -ones]),
    ], format="csr")
    b_ub = np.concatenate([P.beta.cpu().numpy(), np.zeros(2 * n)])
    c = np.zeros(n + 1)
    c[-1] = 1.0
    if P.lo is None:
        lb = np.full(n + 1, -np.inf)
        ub = np.full(n + 1, np.inf)
    else:
        lb = np.concatenate([P.lo.cpu().numpy(), [-np.inf]])
        assert P.hi is not None  # lo and hi come together
        ub = np.concatenate([P.hi.cpu().numpy(), [np.inf]])
    lb[-1] = 0.0
    return c, A_ub, b_ub, np.stack([lb, ub], 1)


def solve_highs(P: Scaled, method: str = "highs", time_limit: float | None = None, tol: float = 1e-10) -> Solution:
    c, A_ub, b_ub, bounds = full_lp(P)
    m = P.shape[0]
    opts = {"primal_feasibility_tolerance": tol, "dual_feasibility_tolerance": tol}
    if method == "highs-ipm":
        opts["ipm_optimality_tolerance"] = 1e-12
    if time_limit is not None:
        opts["time_limit"] = float(time_limit)
    res = scipy.optimize.linprog(c, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method=method, options=opts)
    dev = P.device
    if res.status == 2:
        marg = getattr(getattr(res, "ineqlin", None), "marginals", None)
        lam = torch.from_numpy(-np.asarray(marg[:m])).to(dev) if marg is not None \
            else torch.zeros(m, dtype=torch.float64, device=dev)
        return Solution(None, math.inf, lam.clamp(min=0), "infeasible", "HiGHS: the LP is infeasible",
                        int(res.nit), 0, {})
    if res.status == 1:
        raise SolverError(f"HiGHS hit its limit before finishing ({res.message})")
    if res.status != 0:
        return Solution(None, math.inf, torch.zeros(m, dtype=torch.float64, device=dev), "failed",
                        f"HiGHS: {res.message}", int(res.nit), 0, {})
    x = res.x
    lam = torch.from_numpy(-np.asarray(res.ineqlin.marginals[:m])).to(dev).clamp(min=0.0)
    rho = torch.from_numpy(x[:-1]).to(dev)
    return Solution(rho, float(x[-1]), lam, "optimal", "HiGHS: optimal", int(res.nit), 0, {})
