"""The structured solver's exact finish from a search's dual point: restricted masters and
pricing until the certified gap closes.

The master's dual point certifies a lower bound on the FULL problem; coordinates whose fixed
value disagrees with it are freed, and the master is re-solved. Shared by the one-image and the
batched search, so both end on the same certificates.
"""

from __future__ import annotations

import math
import time

import torch

from .master import _cancelling_rows, _master
from .problem import Scaled, dual_bound, room
from .solution import _Z_INFEASIBLE, Solution, _Counter

#: A certified relative gap this small is what float64 sums over d ~ 1e5-1e6 terms can resolve:
#: the finish stops there (reporting the gap) rather than growing its master without end.
_GAP_FLOOR = 1e-8
#: When the certified gap stops shrinking (three rounds without 1 % progress) below this, the
#: answer is as exact as the data allow (float32 Jacobians: ~1e-7): stop and report the gap.
_STALL_GAP = 1e-6


def _best_response(P: Scaled, u, z, rho_master):
    """r_i = -sign(u_i) min(z, room_i) off the kinks (master's values, clipped, on them), if feasible."""
    lo, hi = P.lo, P.hi
    kink = u.abs() <= 1e-13 * float(u.abs().max())
    rho = -torch.sign(u) * torch.clamp(room(u, lo, hi), max=z)
    rho = torch.where(kink, rho_master.clamp(-z, z), rho)
    if lo is not None and hi is not None:
        rho = torch.minimum(torch.maximum(rho, lo), hi)
    if float((P.matvec(rho, exact=True) - P.beta).max()) > 1e-13:
        return None
    return rho


def _finish_info(info: dict, rnd: int, K: torch.Tensor, t0: float, z: float) -> None:
    info["rounds"] = rnd
    info["master_size"] = int(K.numel())
    info["time_s"] = time.perf_counter() - t0
    # how far the search's certificate was from the optimum: the finish's cost grows with it
    info["search_gap"] = (z - info["search_bound"]) / max(z, 1e-300)


def finish(P: Scaled, lam: torch.Tensor, u: torch.Tensor, z_lb: float, iters: int, cnt: _Counter, info: dict,
           t0: float, tol: float = 1e-9, max_rounds: int = 30, master_size: int | None = None) -> Solution:
    """The exact finish from a search's dual point (lam, u = Ah^T lam, its bound z_lb): restricted
    masters and pricing until the certified gap closes. Shared by the one-image and the batched
    search (:mod:`.batched`), so both end on the same certificates."""
    beta, lo, hi = P.beta, P.lo, P.hi
    m, n = P.shape
    master_size = master_size or max(2 * m, 40)
    k0 = min(master_size, n)
    K = torch.topk(u.abs(), k0, largest=False).indices
    z_est = max(z_lb, 1.0)
    # the search's dual point is a certificate too (often the best one: the masters' duals are
    # only as exact as their few free columns allow)
    best = (z_lb, lam) if 0.0 < z_lb < math.inf else None
    best_primal: tuple[float, torch.Tensor] | None = None
    elastic = False
    gap = math.inf
    gaps: list[float] = []
    for rnd in range(1, max_rounds + 1):
        rho, z_m, lam_m, status, slack = _master(P, u, z_est, K, cnt, elastic)
        if status == "infeasible" and not elastic:
            elastic = True
            continue
        if status != "optimal":
            return Solution(None, math.inf, lam, "failed", f"restricted LP {status}", iters + rnd, cnt.passes, info)
        u_m = P.rmatvec(lam_m, exact=True)
        cnt.passes += 1
        c_m = float(-(beta @ lam_m))
        lb = dual_bound(u_m, c_m, lo, hi)
        if elastic and slack > 1e-9:
            if lb > _Z_INFEASIBLE:
                return Solution(None, math.inf, lam_m, "infeasible",
                                "no r satisfies A r <= b within the box (certified)", iters + rnd, cnt.passes, info)
        elif best is None or lb > best[0]:
            best = (lb, lam_m)
        if slack <= 1e-9 and not math.isinf(lb) and lb > 0:
            # The best response to the master's dual, at the bound it proves, is often feasible
            # already: then it is optimal (its z equals a certified lower bound). This catches the
            # master's own round-off, which leaves coordinates with tiny reduced costs unmoved.
            rho_br = _best_response(P, u_m, lb, rho)
            cnt.passes += 1
            if rho_br is not None:
                z_br = float(rho_br.abs().max())
                if z_br < z_m:
                    rho, z_m = rho_br, z_br
        if slack <= 1e-9:
            assert best is not None  # set above whenever the master is feasible
            if best_primal is None or z_m < best_primal[0]:
                best_primal = (z_m, rho)
            else:  # a larger master can come back a hair worse (its own tolerances): keep the best point
                z_m, rho = best_primal
            gap = (z_m - best[0]) / max(z_m, 1e-300)
            if gap <= tol:
                _finish_info(info, rnd, K, t0, z_m)
                return Solution(rho, z_m, best[1], "optimal", "optimal (certified)", iters + rnd, cnt.passes, info)
            if gap <= _GAP_FLOOR:
                # The gap is at the precision floor of the masters and of float64 sums over d terms
                # (float32 data: ~1e-8): more rounds only grow the master for no better answer
                # (measured: 45 s instead of 0.02 s at d = 27,648, and a hang on tight instances).
                _finish_info(info, rnd, K, t0, z_m)
                return Solution(rho, z_m, best[1], "optimal", f"optimal to the data's precision (certified gap "
                                f"{gap:.2g}, asked {tol:.2g})", iters + rnd, cnt.passes, info)
            z_est = z_m
        # pricing: coordinates whose fixed value disagrees with the best response to lam_m
        sigma_new = -torch.sign(u_m)
        rm_new = room(u_m, lo, hi)
        inK = torch.zeros(n, dtype=torch.bool, device=P.device)
        inK[K] = True
        sigma_old = -torch.sign(u).double()
        rm_old = room(u.double(), lo, hi)
        z_ref = z_m if slack <= 1e-9 else z_est
        wrong_sign = (sigma_new != sigma_old) & (u_m != 0)
        type_old = rm_old >= z_est
        type_new = rm_new >= z_ref
        wrong = (~inK) & (wrong_sign | (type_old != type_new))
        nwrong = int(wrong.sum())
        if slack <= 1e-9:
            gaps.append(gap)
        stalled = len(gaps) >= 3 and min(gaps[-3:]) >= 0.99 * gaps[-3]  # no progress in three rounds
        if slack <= 1e-9 and best is not None and stalled and gap <= _STALL_GAP:
            # no progress in three rounds at a gap float32 data cannot resolve: say what was reached
            _finish_info(info, rnd, K, t0, z_m)
            return Solution(rho, z_m, best[1], "optimal", f"optimal to the data's precision (certified gap "
                            f"{gap:.2g}, asked {tol:.2g})", iters + rnd, cnt.passes, info)
        if nwrong == 0:
            # nothing to price in: widen the free set around the kinks instead
            extra = torch.topk(u_m.abs().masked_fill(inK, math.inf), min(K.numel(), n - K.numel()), largest=False).indices
            if extra.numel() == 0:
                break
            K = torch.cat([K, extra])
            continue
        score = (u_m.abs() * torch.minimum(rm_new, torch.full_like(rm_new, z_ref))).masked_fill(~wrong, -1.0)
        add = torch.topk(score, min(nwrong, max(2 * master_size, 1000))).indices
        K = torch.cat([K, add])
    if elastic and lo is None:
        # The masters stayed infeasible: look for rows of A that cancel (a Farkas certificate).
        lam_f = _cancelling_rows(P)
        if lam_f is not None:
            return Solution(None, math.inf, lam_f, "infeasible",
                            "the rows of A cancel in a way no r can satisfy (certified)", iters, cnt.passes, info)
    gap_msg = "" if best is None else f" (best certified lower bound {best[0]:.6g})"
    if best is not None and rho is not None and slack <= 1e-9:
        return Solution(rho, z_m, best[1], "optimal", "stopped at the round limit; gap not closed" + gap_msg,
                        iters + max_rounds, cnt.passes, info)
    return Solution(None, math.inf, lam, "failed", "the exact solver did not converge" + gap_msg, iters, cnt.passes, info)
