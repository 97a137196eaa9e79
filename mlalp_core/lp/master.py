"""The small LPs of the structured solver's finish, solved on the CPU by HiGHS's dual simplex.

:func:`_master`: the restricted master. Coordinates far from their kink are fixed at the value
the dual says and aggregated into two columns (those at +-z, those at their bound); the few near
their kink stay free. :func:`_cancelling_rows`: a Farkas certificate when rows of A cancel.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from .problem import Scaled, room
from .solution import _Z_INFEASIBLE, _Counter
from .tiny_lp import solve_tiny_lp


def _master(P: Scaled, u, z_est, K, cnt: _Counter, elastic: bool):
    """Solve the restricted LP; returns (rho, z, lam, status, slack) with rho on A's device."""
    beta, lo, hi = P.beta, P.lo, P.hi
    m, n = P.shape
    dev = P.device
    u = u.double()
    sigma = -torch.sign(u)
    rm = room(u, lo, hi)
    inK = torch.zeros(n, dtype=torch.bool, device=dev)
    inK[K] = True
    zgrp = (~inK) & (rm >= z_est)
    bgrp = (~inK) & (rm < z_est)
    vz = torch.where(zgrp, sigma, torch.zeros_like(sigma))
    vb = torch.where(bgrp, sigma * torch.where(bgrp, rm, torch.zeros_like(rm)), torch.zeros_like(sigma))
    cols = P.matvec(torch.stack([vz, vb], 1), exact=True)  # (m, 2): one pass
    cnt.passes += 1
    c_z, c_b = cols[:, 0], cols[:, 1]
    has_z = bool(zgrp.any())
    has_b = bool(bgrp.any())
    rho_lo = float(rm[zgrp].min()) if has_z else math.inf
    rho_hi = float(rm[bgrp].max()) if has_b else 0.0

    AK = P.columns(K).cpu().numpy()
    k = AK.shape[1]
    # variable order: z, r_K (k), [w], [theta], [e (m)]
    nv = 1 + k + int(has_z) + int(has_b) + (m if elastic else 0)
    iw = 1 + k
    it = iw + int(has_z)
    ie = it + int(has_b)
    blocks_rows, blocks_cols, blocks_vals = [], [], []

    def add(rows, cols_, vals):
        blocks_rows.append(np.asarray(rows).ravel())
        blocks_cols.append(np.asarray(cols_).ravel())
        blocks_vals.append(np.asarray(vals, dtype=np.float64).ravel())

    rr, cc = np.meshgrid(np.arange(m), np.arange(1, 1 + k), indexing="ij")
    add(rr, cc, AK)
    if has_z:
        add(np.arange(m), np.full(m, iw), c_z.cpu().numpy())
    if has_b:
        add(np.arange(m), np.full(m, it), c_b.cpu().numpy())
    if elastic:
        add(np.arange(m), ie + np.arange(m), -np.ones(m))
    row = m
    # r_i - z <= 0 and -r_i - z <= 0
    idx = np.arange(k)
    add(row + idx, 1 + idx, np.ones(k))
    add(row + idx, np.zeros(k, int), -np.ones(k))
    row += k
    add(row + idx, 1 + idx, -np.ones(k))
    add(row + idx, np.zeros(k, int), -np.ones(k))
    row += k
    if has_z:
        add([row, row], [iw, 0], [1.0, -1.0])
        row += 1
    if has_b:
        add([row, row], [it, 0], [rho_hi, -1.0])
        row += 1
    A_ub = sp.csr_matrix((np.concatenate(blocks_vals), (np.concatenate(blocks_rows), np.concatenate(blocks_cols))),
                         shape=(row, nv))
    b_ub = np.zeros(row)
    b_ub[:m] = beta.cpu().numpy()
    c = np.zeros(nv)
    c[0] = 1.0
    if elastic:
        c[ie:] = 1e6
    col_lo = np.full(nv, -np.inf)
    col_hi = np.full(nv, np.inf)
    col_lo[0] = 0.0
    if lo is not None and hi is not None:
        col_lo[1:1 + k] = lo[K].cpu().numpy()
        col_hi[1:1 + k] = hi[K].cpu().numpy()
    if has_z:
        col_lo[iw], col_hi[iw] = 0.0, rho_lo
    if has_b:
        col_lo[it], col_hi[it] = 0.0, 1.0
    if elastic:
        col_lo[ie:] = 0.0
    res = solve_tiny_lp(c, A_ub, np.full(row, -np.inf), b_ub, col_lo, col_hi)
    if res.status == "infeasible":
        return None, math.inf, None, "infeasible", 0.0
    if res.status != "optimal":
        return None, math.inf, None, f"failed: {res.message}", 0.0
    x, row_dual = res.x, res.row_dual
    assert x is not None and row_dual is not None  # an optimal tiny LP has both
    lam = torch.from_numpy(-row_dual[:m]).to(dev).clamp(min=0.0)
    rho = torch.zeros(n, dtype=torch.float64, device=dev)
    if has_z:
        rho = torch.where(zgrp, sigma * x[iw], rho)
    if has_b:
        rho = torch.where(bgrp, sigma * rm * x[it], rho)
    rho[K] = torch.from_numpy(x[1:1 + k]).to(dev)
    slack = float(np.sum(x[ie:])) if elastic else 0.0
    return rho, float(x[0]), lam, "optimal", slack


def _cancelling_rows(P: Scaled) -> torch.Tensor | None:
    """lam >= 0 with A^T lam ~ 0 and beta.lam < 0 (the problem is then infeasible), or None.

    Such a lam lies in the null space of the l x l Gram matrix A A^T; a tiny LP over that space
    finds one with beta.lam < 0 if it exists. It counts only if it proves z > _Z_INFEASIBLE.
    """
    beta = P.beta
    G = P.gram().cpu().numpy()
    w, V = np.linalg.eigh(G)
    N = V[:, w <= 1e-13 * max(w.max(), 1e-300)]
    if N.shape[1] == 0:
        return None
    m, k = N.shape
    # min beta.N c  s.t.  N c >= 0, sum(N c) = 1
    bn = beta.cpu().numpy() @ N
    res = solve_tiny_lp(bn, np.vstack([N, N.sum(0, keepdims=True)]), np.r_[np.zeros(m), 1.0],
                        np.r_[np.full(m, np.inf), 1.0], np.full(k, -np.inf), np.full(k, np.inf))
    if res.status != "optimal":
        return None
    lam = torch.from_numpy(np.clip(N @ res.x, 0.0, None)).to(P.device)
    c = float(-(beta @ lam))
    if c <= 0 or float(P.rmatvec(lam, exact=True).abs().sum()) * _Z_INFEASIBLE > c:
        return None
    return lam
