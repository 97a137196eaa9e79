"""The structured solver's search for a batch of LPs at once (one set of kernels over (B, l, d)).

On a GPU the one-image solver is bound by kernel launches and host synchronisations, not by
arithmetic: a pass over a 20 x 602,112 Jacobian takes ~0.1 ms on an H200, while each Newton
iteration waits on the host a dozen times. Here the dual Newton search (full phase, narrowed
phase, the box's levels) runs on the whole stack: every pass is one ``bmm``, every host sync
serves all images, and the per-image pieces (the l x l active-set Newton directions, the
brackets of the exact line search) are batched arrays. Images differ in which rows and columns
matter; the stack keeps all of them and gives the ones that do not matter zero weight (a row
outside the kept set has a zero scale and a zero beta, so its dual stays 0; a column outside
has zero slopes and never enters a Newton band). Each image then goes through the same exact
finish as the one-image solver (:func:`.finish.finish`), so answers are certified the same
way.

The parts: :mod:`.batched_problem` (the stack), :mod:`.batched_newton` (the dual Newton
method), :mod:`.batched_search` (full, then narrowed); here, the levels of the box and the
hand-over to each image's finish.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from . import search as one_image
from .batched_problem import BatchScaled, stack
from .batched_search import search
from .finish import finish
from .problem import Prepared, dual_bounds
from .solution import _Z_INFEASIBLE, Solution, _Counter


def _bounds(P: BatchScaled, beta: np.ndarray, lam: np.ndarray, lo: torch.Tensor | None, hi: torch.Tensor | None,
            which: np.ndarray, cnt: _Counter) -> np.ndarray:
    """The float64 lower bound each image's dual point proves (as the one-image search's)."""
    u = P.rmatvec(torch.from_numpy(lam).to(P.M.device), exact=True)
    cnt.passes += 1
    c = -(lam * beta).sum(1)
    return np.where(which, dual_bounds(u, c, lo, hi), 0.0)


def solve_batch(preps: list[Prepared], A: torch.Tensor, tol: float = 1e-9, max_newton: int = 40,
                max_rounds: int = 30) -> list[Solution]:
    """Solve the prepared, non-trivial problems of a stack A (B, l, d) together; returns one
    :class:`Solution` per image in its own :class:`Scaled` (the one-image finish's input)."""
    t0 = time.perf_counter()
    P, lo, hi = stack(preps, A)
    B, m, n = A.shape
    cnt = _Counter()
    info: list[dict] = [{} for _ in range(B)]
    ms = [p.scaled.shape[0] for p in preps if p.scaled is not None]
    band_min = max(2 * max(ms), 20)
    band0 = max(band_min, n // 200)
    beta_np = P.beta.cpu().numpy()
    lam = np.maximum(-beta_np, 0.0)
    lam = lam / (-(lam * beta_np).sum(1, keepdims=True))
    every = np.ones(B, dtype=bool)
    iters = np.zeros(B, dtype=int)
    failed: dict[int, str] = {}
    own = np.zeros(B, dtype=int)  # passes over one image's rows (the narrowed rounds)
    if lo is None or hi is None:
        w = P.live.to(A.dtype)
        lam, u, its = search(P, lam, w, w, every, cnt, max_newton, band0, band_min, info, row_passes=own)
        iters += its
        z_lb = _bounds(P, beta_np, lam, None, None, every, cnt)
        for j in np.flatnonzero(z_lb > _Z_INFEASIBLE).tolist():
            failed[j] = ("the rows of A are (nearly) dependent in a way no r can satisfy: ||r||_inf would have to "
                         f"exceed {z_lb[j]:.3g} times the scale of the problem")
    else:
        z = np.ones(B)
        z_lb = np.zeros(B)
        going = every.copy()
        for outer in range(12):
            if not going.any():
                break
            zt = torch.from_numpy(z).to(A.device)[:, None]
            alpha, gamma = torch.minimum(-lo, zt), torch.minimum(hi, zt)
            partial = outer == 0 and n >= one_image._REDUCE_MIN_N
            lam, u, its = search(P, lam, alpha, gamma, going, cnt, max_newton,
                                 band0 if outer == 0 else band_min * 4, band_min, info,
                                 None if outer == 0 else 0, narrow=not partial, row_passes=own)
            iters[going] += its[going]
            zl = _bounds(P, beta_np, lam, lo, hi, going, cnt)
            z_lb[going] = zl[going]
            for j in np.flatnonzero(going & np.isinf(zl)).tolist():
                failed[j] = "the box [lo, hi] leaves too little room: no r satisfies A r <= b"
                going[j] = False
            if not partial:
                going &= ~(zl <= z * (1 + 1e-6))
            z = np.where(going, np.maximum(z, zl), z)
    search_s = (time.perf_counter() - t0) / B
    out: list[Solution] = []
    for i, prep in enumerate(preps):
        Pi = prep.scaled
        assert Pi is not None
        rows = torch.from_numpy(np.flatnonzero(P.rowmask[i])).to(A.device)
        lam_i = torch.from_numpy(lam[i]).to(A.device)[rows]
        info[i].update(search_s=search_s, newton_iterations=int(iters[i]), search_bound=float(z_lb[i]),
                       batch=B, batch_passes=cnt.passes)
        ci = _Counter()
        ci.passes = cnt.passes + int(own[i])
        if i in failed:
            out.append(Solution(None, math.inf, lam_i, "infeasible", failed[i], int(iters[i]), ci.passes, info[i]))
            continue
        u_i = u[i] if Pi.cols is None else u[i, Pi.cols]
        ti = time.perf_counter() - search_s
        out.append(finish(Pi, lam_i, u_i, float(z_lb[i]), int(iters[i]), ci, info[i], ti, tol, max_rounds))
    return out


__all__ = ["BatchScaled", "solve_batch", "stack"]
