"""The structured solver's search on a batch of LPs (:mod:`.search` for B images): full Newton
together, then each image's own narrowed rounds on one stepper, so no image waits for another's."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import search as one_image
from .batched_newton import _Newton, dual_newton, line_search
from .batched_problem import BatchScaled
from .problem import matvec64
from .solution import _Counter


def _narrowed_set(absu: torch.Tensor, live: torch.Tensor, size: int) -> torch.Tensor:
    inN = torch.zeros_like(live)
    inN.scatter_(1, torch.topk(absu.masked_fill(~live, math.inf), size, 1, largest=False).indices, True)
    return inN & live


def _row_rmatvec(P: BatchScaled, lam: np.ndarray, i: int) -> torch.Tensor:
    """Image i's Ah^T lam in the search dtype, on a view of its rows (no copy of the stack)."""
    w = torch.from_numpy(lam[i]).to(P.M.device) * P.inv_norm[i]
    return w.to(P.M.dtype) @ P.M[i]


def search(P: BatchScaled, lam: np.ndarray, alpha: torch.Tensor, gamma: torch.Tensor, run: np.ndarray,
           cnt: _Counter, max_newton: int, band0: int, band_min: int, info: list[dict],
           full_iterations: int | None = None, narrow: bool = True,
           row_passes: np.ndarray | None = None) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """:func:`.one_image._search` on the running images: full Newton together, then the
    narrowed search, where each image has its own narrowed set (padded to the largest with
    dead columns) and its own rounds: when one image's round ends, it checks its signs and
    starts its next round while the others' Newton iterations go on. ``cnt`` counts passes over
    the whole stack, ``row_passes`` (B,) each image's passes over its own rows."""
    B, m, n = P.M.shape
    dev = P.M.device
    reduce = n >= one_image._REDUCE_MIN_N
    first = min(max_newton, one_image._FULL_NEWTON if full_iterations is None else full_iterations) if reduce else max_newton
    lam, u, its = dual_newton(P, lam, alpha, gamma, run, cnt, first, band0, band_min)
    if not reduce or not narrow:
        return lam, u, its
    nar = run & (its >= first)
    if not nar.any():
        return lam, u, its
    lam = lam.copy()
    own = row_passes if row_passes is not None else np.zeros(B, dtype=int)
    al, ga = alpha.double(), gamma.double()
    sdt = P.search_dtype
    a_s, g_s = alpha.to(sdt), gamma.to(sdt)
    size = min(max(n // one_image._REDUCE_FRACTION, 2000), n)
    inN = _narrowed_set(u.abs(), P.live, size)
    ref = torch.sign(u)
    rounds = np.zeros(B, dtype=int)
    red_iters = np.zeros(B, dtype=int)
    cap = size + size // 4
    # The narrowed problems, one row per image: column 0 the far coordinates' aggregated linear
    # part (it counts only while positive: weights 1 and 0 keep the model below f), then the
    # image's narrowed set, then dead padding.
    Pr = BatchScaled(M=torch.zeros(B, m, cap + 1, dtype=torch.float64, device=dev), inv_norm=P.inv_norm,
                     beta=P.beta, live=torch.zeros(B, cap + 1, dtype=torch.bool, device=dev), rowmask=P.rowmask)
    zero = torch.zeros(B, cap + 1, dtype=torch.float64, device=dev)
    newton = _Newton(Pr, lam, zero, zero.clone(), np.zeros(B, dtype=bool), _Counter(), 4 * max_newton, band_min,
                     band_min)
    band_r = np.zeros(B, dtype=int)

    def build(i: int) -> None:
        """Image i's narrowed problem around its current point (one pass over its rows)."""
        nonlocal cap
        ref[i] = torch.sign(u[i])
        coef = torch.where(ref[i] > 0, al[i], -ga[i]).masked_fill(inN[i], 0.0)
        col = matvec64(P.M[i], coef)  # the far coordinates' linear part, unscaled
        own[i] += 1
        N = inN[i].nonzero().squeeze(1)
        k = N.numel()
        if k > cap:
            extra = k - cap + cap // 4
            cap += extra
            newton.grow(extra)
        M_r, al_r, ga_r, live_r = newton.P.M, newton.alpha, newton.gamma, newton.P.live
        M_r[i].zero_()
        M_r[i, :, 0] = col
        M_r[i, :, 1:k + 1] = P.M[i][:, N].double()
        al_r[i].zero_()
        ga_r[i].zero_()
        al_r[i, 0] = 1.0
        al_r[i, 1:k + 1] = al[i, N]
        ga_r[i, 1:k + 1] = ga[i, N]
        live_r[i].zero_()
        live_r[i, :k + 1] = True
        band_r[i] = max(band_min, (k + 1) // one_image._REDUCED_BAND)

    for i in np.flatnonzero(nar).tolist():
        build(i)
    rounds[nar] = 1
    newton.restart(nar, lam, band_r)
    active = nar.copy()
    fallback = np.zeros(B, dtype=bool)
    while active.any():
        newton.step()
        ended = active & ~newton.running
        if not ended.any():
            continue
        active &= ~ended
        red_iters[ended] += newton.its[ended]
        restart = np.zeros(B, dtype=bool)
        for i in np.flatnonzero(ended).tolist():
            lam_r = newton.lam
            u_r = _row_rmatvec(P, lam_r, i)
            own[i] += 1
            flipped = (~inN[i]) & (torch.sign(u_r) * ref[i] < 0) & P.live[i]
            nflip = int(flipped.sum())
            if nflip == 0:  # the model was exact at its minimiser: that is f's minimiser
                lam[i], u[i] = lam_r[i], u_r
                continue
            # Move only as far along lam -> lam_r as f itself falls (exact line search, no pass),
            # then narrow again around the new point: the flipped coordinates join the set, or,
            # when very many flipped (a far first guess), a fresh set.
            v = (u_r - u[i])[None]
            t = float(line_search(u[i][None], v, a_s[i][None], g_s[i][None], np.ones(1), np.ones(1, dtype=bool))[0])
            lam[i] = lam[i] + t * (lam_r[i] - lam[i])
            u[i] = u[i] + t * v[0]
            if nflip <= size // 4:
                inN[i] |= flipped
            else:
                inN[i] = _narrowed_set(u[i][None].abs(), P.live[i][None], size)[0]
            if rounds[i] >= one_image._REDUCE_ROUNDS:  # the signs kept moving: Newton on all of A
                fallback[i] = True
                continue
            rounds[i] += 1
            build(i)
            restart[i] = True
        if restart.any():
            newton.restart(restart, lam, band_r)
            active |= restart
    if fallback.any():
        lam, u, more = dual_newton(P, lam, alpha, gamma, fallback, cnt, max_newton, band_min, band_min)
        its[fallback] += more[fallback]
    sizes = inN.sum(1).cpu().numpy()
    for i in np.flatnonzero(rounds).tolist():
        info[i]["narrowed_rounds"] = info[i].get("narrowed_rounds", 0) + int(rounds[i])
        info[i]["narrowed_size"] = int(sizes[i])
        info[i]["narrowed_iterations"] = info[i].get("narrowed_iterations", 0) + int(red_iters[i])
    return lam, u, its + red_iters
