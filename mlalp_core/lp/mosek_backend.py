"""MOSEK's interior point on the full LP, as the authors used it; only when a licence exists.

Built with vectorised calls (no per-column Python loop). Without a licence file it raises a
:class:`~mlalp_core.errors.SolverError` naming the places it looked.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SolverError
from .problem import Scaled
from .solution import Solution


def licence_locations() -> list[Path]:
    """Where MOSEK looks for its licence, in order."""
    places = []
    env = os.environ.get("MOSEKLM_LICENSE_FILE")
    if env:
        places += [Path(p) for p in env.split(os.pathsep) if p]
    home = Path.home()
    places += [home / "mosek" / "mosek.lic"]
    return places


def find_licence() -> Path | None:
    for p in licence_locations():
        if "@" in str(p):  # a licence server (port@host) cannot be checked from here
            return p
        if p.is_file():
            return p
    return None


def _mosek() -> Any:
    """The mosek module, or None: an optional extra (``pip install .[mosek]``), never a requirement."""
    try:
        import mosek
    except ImportError:
        return None
    return mosek


def mosek_available() -> tuple[bool, str]:
    if _mosek() is None:
        return False, "the mosek package is not installed (pip install mosek)"
    lic = find_licence()
    if lic is None:
        where = ", ".join(str(p) for p in licence_locations())
        return False, f"no MOSEK licence file found (looked at {where}; set MOSEKLM_LICENSE_FILE)"
    return True, f"licence: {lic}"


def solve_mosek(P: Scaled) -> Solution:
    ok, why = mosek_available()
    if not ok:
        raise SolverError(f"MOSEK backend unavailable: {why}")
    mosek = _mosek()

    A = P.dense64().cpu().numpy()
    m, n = A.shape
    inf = 0.0
    with mosek.Env() as env, env.Task() as task:
        nv = n + 1  # rho, z
        task.appendvars(nv)
        task.appendcons(m + 2 * n)
        task.putcj(n, 1.0)
        task.putobjsense(mosek.objsense.minimize)
        # variable bounds
        if P.lo is None:
            task.putvarboundsliceconst(0, n, mosek.boundkey.fr, -inf, inf)
        else:
            assert P.hi is not None
            lo, hi = P.lo.cpu().numpy(), P.hi.cpu().numpy()
            task.putvarboundslice(0, n, [mosek.boundkey.ra] * n, lo.tolist(), hi.tolist())
        task.putvarbound(n, mosek.boundkey.lo, 0.0, inf)
        # A rho <= beta
        rows, cols = np.nonzero(A)
        task.putaijlist(rows.astype(np.int64), cols.astype(np.int64), A[rows, cols])
        beta = P.beta.cpu().numpy()
        task.putconboundslice(0, m, [mosek.boundkey.up] * m, [-inf] * m, beta.tolist())
        # rho_i - z <= 0, -rho_i - z <= 0
        idx = np.arange(n, dtype=np.int64)
        r1, r2 = m + idx, m + n + idx
        task.putaijlist(np.concatenate([r1, r1, r2, r2]),
                        np.concatenate([idx, np.full(n, n), idx, np.full(n, n)]),
                        np.concatenate([np.ones(n), -np.ones(n), -np.ones(n), -np.ones(n)]))
        task.putconboundslice(m, m + 2 * n, [mosek.boundkey.up] * (2 * n), [-inf] * (2 * n), [0.0] * (2 * n))
        task.putintparam(mosek.iparam.optimizer, mosek.optimizertype.intpnt)
        try:
            task.optimize()
        except mosek.Error as exc:
            raise SolverError(f"MOSEK failed: {exc}") from exc
        sol = mosek.soltype.itr
        solsta = task.getsolsta(sol)
        dev = P.device
        if solsta in (mosek.solsta.prim_infeas_cer,):
            y = np.array(task.gety(sol))[:m]
            return Solution(None, math.inf, torch.from_numpy(-y).to(dev).clamp(min=0), "infeasible",
                            "MOSEK: primal infeasibility certificate", 0, 0, {})
        if solsta != mosek.solsta.optimal:
            return Solution(None, math.inf, torch.zeros(m, dtype=torch.float64, device=dev), "failed",
                            f"MOSEK: solution status {solsta}", 0, 0, {})
        x = np.array(task.getxx(sol))
        y = np.array(task.gety(sol))[:m]
        return Solution(torch.from_numpy(x[:n]).to(dev), float(x[n]), torch.from_numpy(-y).to(dev).clamp(min=0),
                        "optimal", "MOSEK: optimal", 0, 0, {})
