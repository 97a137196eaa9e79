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
finish as the one-image solver (:func:`.structured.finish`), so answers are certified the same
way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import structured
from .problem import Prepared
from .structured import Scaled, Solution, _Counter, finish

_CHUNK = 1 << 15


@dataclass
class BatchScaled:
    """B scaled problems over one (B, l, n) stack, in the scaling each image's :class:`Scaled` has."""

    M: torch.Tensor  # (B, l, n), as given (float32 Jacobians stay float32)
    inv_norm: torch.Tensor  # (B, l) float64; 0 on rows an image does not keep
    beta: torch.Tensor  # (B, l) float64; 0 on rows an image does not keep
    live: torch.Tensor  # (B, n) bool: columns that matter
    rowmask: np.ndarray  # (B, l) bool: kept rows

    @property
    def search_dtype(self) -> torch.dtype:
        return self.M.dtype

    def rmatvec(self, lam: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """(B, n): Ah_b^T lam_b for every image."""
        w = (lam.double() * self.inv_norm)[:, None, :]
        if not exact or self.M.dtype == torch.float64:
            return torch.bmm(w.to(self.M.dtype), self.M).squeeze(1)
        out = torch.empty(self.M.shape[0], self.M.shape[2], dtype=torch.float64, device=self.M.device)
        for a in range(0, self.M.shape[2], _CHUNK):
            out[:, a:a + _CHUNK] = torch.bmm(w, self.M[:, :, a:a + _CHUNK].double()).squeeze(1)
        return out

    def matvec(self, v: torch.Tensor, exact: bool = False, scaled: bool = True) -> torch.Tensor:
        """(B, l): Ah_b v_b (``scaled=False``: M_b v_b)."""
        if not exact or self.M.dtype == torch.float64:
            out = torch.bmm(self.M, v.to(self.M.dtype)[:, :, None]).squeeze(2)
        else:
            v = v.double()
            out = torch.zeros(self.M.shape[:2], dtype=torch.float64, device=self.M.device)
            for a in range(0, self.M.shape[2], _CHUNK):
                out += torch.bmm(self.M[:, :, a:a + _CHUNK].double(), v[:, a:a + _CHUNK, None]).squeeze(2)
        if not scaled:
            return out.double()
        return out.double() * self.inv_norm if exact else out * self.inv_norm.to(out.dtype)

    def columns(self, S: torch.Tensor) -> torch.Tensor:
        """(B, l, k) float64: Ah_b[:, S_b]."""
        B, l, _ = self.M.shape
        cols = torch.gather(self.M, 2, S[:, None, :].expand(B, l, S.shape[1]))
        return cols.double() * self.inv_norm[:, :, None]


def stack(preps: list[Prepared], A: torch.Tensor) -> tuple[BatchScaled, torch.Tensor | None, torch.Tensor | None]:
    """The batch of prepared (non-trivial) problems over the original (B, l, d) stack A, with
    each image's scaled box (zero room on the columns it does not keep)."""
    B, l, d = A.shape
    dev = A.device
    inv_norm = torch.zeros(B, l, dtype=torch.float64, device=dev)
    beta = torch.zeros(B, l, dtype=torch.float64, device=dev)
    live = torch.zeros(B, d, dtype=torch.bool, device=dev)
    rowmask = np.zeros((B, l), dtype=bool)
    box = preps[0].lo is not None
    lo = torch.zeros(B, d, dtype=torch.float64, device=dev) if box else None
    hi = torch.zeros(B, d, dtype=torch.float64, device=dev) if box else None
    for i, prep in enumerate(preps):
        P = prep.scaled
        assert P is not None
        inv_norm[i, P.rows] = P.inv_norm
        beta[i, P.rows] = P.beta
        rowmask[i, P.rows.cpu().numpy()] = True
        if P.cols is None:
            live[i] = True
        else:
            live[i, P.cols] = True
        if lo is not None and hi is not None:
            assert P.lo is not None and P.hi is not None
            cols = slice(None) if P.cols is None else P.cols
            lo[i, cols] = P.lo
            hi[i, cols] = P.hi
    return BatchScaled(M=A, inv_norm=inv_norm, beta=beta, live=live, rowmask=rowmask), lo, hi


# ---- batched pieces of the dual Newton method ---------------------------------------------------
def _fvalues_dev(u: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """f per image (B,), float64, left on the device."""
    pos = u.clamp(min=0).mul_(alpha).sum(1, dtype=torch.float64)
    return pos - u.clamp(max=0).mul_(gamma).sum(1, dtype=torch.float64)


def newton_directions(g: np.ndarray, H: np.ndarray, beta: np.ndarray, lam: np.ndarray, rowmask: np.ndarray,
                      run: np.ndarray) -> np.ndarray:
    """The one-image active-set Newton direction (:func:`.structured._newton_direction`) for
    every running image at once: a variable that is fixed (a dual at 0, or a row the image does
    not keep) gets an identity row, so all systems have one size and one batched solve serves
    each round of the active set."""
    B, m = g.shape
    d = np.zeros((B, m))
    idx = np.flatnonzero(run)
    if idx.size == 0:
        return d
    g, H, beta, lam, keep = g[idx], H[idx], beta[idx], lam[idx], rowmask[idx]
    nb = idx.size
    tr = np.einsum("bii->b", H) / np.maximum(keep.sum(1), 1)
    Hr = H + (1e-10 * np.maximum(tr, 1e-300))[:, None, None] * np.eye(m)[None]
    lmax = np.maximum(np.abs(lam).max(1), 1e-300)
    fixed = ((lam <= 1e-12 * lmax[:, None]) & keep) | ~keep
    gtol = -1e-12 * (np.abs(g).max(1) + 1e-300)
    out = np.zeros((nb, m))
    todo = np.arange(nb)
    for _ in range(m + 1):
        if todo.size == 0:
            break
        F = ~fixed[todo]
        K = np.zeros((todo.size, m + 1, m + 1))
        K[:, :m, :m] = Hr[todo] * (F[:, :, None] & F[:, None, :])
        K[:, :m, :m] += np.eye(m)[None] * (~F)[:, :, None]
        K[:, :m, m] = beta[todo] * F
        K[:, m, :m] = beta[todo] * F
        rhs = np.concatenate([-g[todo] * F, np.zeros((todo.size, 1))], 1)
        try:
            sol = np.linalg.solve(K, rhs[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            sol = np.stack([np.linalg.lstsq(K[j], rhs[j], rcond=None)[0] for j in range(todo.size)])
        dd = sol[:, :m] * F
        nu = sol[:, m]
        out[todo] = dd
        # release the fixed dual whose multiplier is most negative, as the one-image QP does
        eta = g[todo] + np.einsum("bij,bj->bi", Hr[todo], dd) + nu[:, None] * beta[todo]
        cand = fixed[todo] & keep[todo]
        eta = np.where(cand, eta, np.inf)
        worst = np.argmin(eta, 1)
        release = eta[np.arange(todo.size), worst] < gtol[todo]
        fixed[todo[release], worst[release]] = False
        todo = todo[release]
    d[idx] = out
    return d


def line_search(u: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor, t_max: np.ndarray,
                run: np.ndarray) -> np.ndarray:
    """argmin over 0 <= t_b <= t_max_b of f_b(lam_b + t_b d_b) for every running image, exactly:
    the one-image bracketing (:func:`.structured._line_search`) with all brackets probed in the
    same pass, then the breakpoints inside each bracket in one batched top-k."""
    B = u.shape[0]
    dev = u.device
    av = v.abs()
    vpos = v > 0
    shrink = torch.where(vpos, gamma, alpha).mul_(av)
    c = torch.where(vpos, alpha, gamma).mul_(av).add_(shrink)
    buf = torch.empty_like(u)

    def raw(t: np.ndarray | float) -> torch.Tensor:
        """sum_i c_i sign((u_i + t v_i) v_i) per image, left on the device."""
        tt = torch.as_tensor(t, dtype=u.dtype, device=dev)
        torch.addcmul(u, v, tt[:, None] if tt.dim() else tt, out=buf)
        return buf.mul_(v).sign_().mul_(c).sum(1, dtype=torch.float64)

    # one sync for the sums, the slope at 0 and at the first trial step
    t_hi = np.minimum(t_max, 1.0)
    first = torch.stack([shrink.sum(1, dtype=torch.float64), 0.5 * c.sum(1, dtype=torch.float64),
                         0.5 * c.masked_fill(u != 0, 0).sum(1, dtype=torch.float64), raw(0.0), raw(t_hi)])
    shrink_sum, half_sum, kink, r0, r1 = first.cpu().numpy()
    del shrink, vpos, av

    def slope(t: np.ndarray) -> np.ndarray:
        return 0.5 * raw(t).cpu().numpy() + half_sum - shrink_sum

    # slope = sum c (sign + 1) / 2 - shrink; at a kink the step moves away from 0 either way: count it whole
    s0 = 0.5 * r0 + half_sum - shrink_sum + kink
    t = np.zeros(B)
    go = run & (s0 < 0.0)
    t_lo, s_lo = np.zeros(B), s0.copy()
    open_ = go.copy()  # not bracketed yet
    s_hi = 0.5 * r1 + half_sum - shrink_sum
    for rnd in range(8):
        if not open_.any():
            break
        if rnd:
            s_hi = slope(np.where(open_, t_hi, 0.0))
        closed = open_ & (s_hi >= 0.0)
        capped = open_ & ~closed & (t_hi >= t_max)
        t[capped] = t_max[capped]
        go &= ~capped
        grow = open_ & ~closed & ~capped
        t_lo[grow], s_lo[grow] = t_hi[grow], s_hi[grow]
        t_hi[grow] = np.minimum(t_max[grow], t_hi[grow] * 16.0)
        open_ = grow
    t_hi[open_] = math.inf
    fin = go & np.isfinite(t_hi)
    if fin.any():
        # narrow each bracket on a geometric grid of 7 interior points, all probed before one sync
        # (the one-image search bisects three times, one sync each)
        bottom = np.where(t_lo > 0, t_lo, t_hi / 4096.0)
        ratio = np.where(fin, t_hi / np.where(fin, bottom, 1.0), 1.0)
        grid = [np.where(fin, bottom * ratio ** (j / 8.0), 0.0) for j in range(8)]
        probes = torch.stack([raw(g) for g in grid]).cpu().numpy()
        for g, r in zip(grid, probes):
            sg = 0.5 * r + half_sum - shrink_sum
            up = fin & (sg >= 0.0) & (g < t_hi) & (g > t_lo)
            t_hi[up] = g[up]
        for g, r in zip(grid, probes):
            sg = 0.5 * r + half_sum - shrink_sum
            dn = fin & (sg < 0.0) & (g > t_lo) & (g < t_hi)
            t_lo[dn], s_lo[dn] = g[dn], sg[dn]
    if not go.any():
        return t
    torch.div(u, v, out=buf).neg_()  # the breakpoints -u/v
    lo_t = torch.as_tensor(t_lo, dtype=u.dtype, device=dev)[:, None]
    hi_t = torch.as_tensor(np.where(go, t_hi, -1.0), dtype=u.dtype, device=dev)[:, None]
    cand = (buf > lo_t) & (buf <= hi_t) & torch.isfinite(buf)
    counts = cand.sum(1)
    buf.masked_fill_(~cand, math.inf)
    need = torch.as_tensor(-s_lo, dtype=torch.float64, device=dev)[:, None]

    def crossing(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first of the k smallest breakpoints where the slope turns >= 0 (inf if none)."""
        vals, idx = torch.topk(buf, k, 1, largest=False)
        jump = torch.gather(c, 1, idx).masked_fill_(~torch.isfinite(vals), 0).double().cumsum(1)
        hit = jump >= need
        tv = torch.gather(vals, 1, hit.int().argmax(1, keepdim=True)).squeeze(1).double()
        return torch.where(hit.any(1), tv, torch.full_like(tv, math.inf)), hit.any(1)

    # one sync: the crossing among the first few thousand breakpoints, and whether that sufficed
    cap = min(buf.shape[1], 4096)
    tv, found = crossing(cap)
    tstar, hit_np, cnt_np = torch.stack([tv, found.double(), counts.double()]).cpu().numpy()
    if (go & (hit_np == 0) & (cnt_np > cap)).any():
        tstar = crossing(int(cnt_np.max()))[0].cpu().numpy()
    t[go] = np.maximum(t_lo, np.minimum(np.minimum(tstar, t_max), t_hi))[go]
    return t


def dual_newton(P: BatchScaled, lam: np.ndarray, alpha: torch.Tensor, gamma: torch.Tensor, run: np.ndarray,
                cnt: _Counter, max_iter: int, band0: int, band_min: int, ftol: float = 1e-12,
                ) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """:func:`.structured._dual_newton` on every running image at once; the others keep their
    point. Returns (lam (B, l), u (B, n), iterations (B,))."""
    B, m, n = P.M.shape
    dev = P.M.device
    beta_np = P.beta.cpu().numpy()
    sdt = P.search_dtype
    alpha, gamma = alpha.to(sdt), gamma.to(sdt)
    lam = lam.copy()
    u = P.rmatvec(torch.from_numpy(lam).to(dev))
    cnt.passes += 1
    # f's value after a step is fetched with the next iteration's transfer (one sync fewer per
    # iteration); the stopping test then runs before that iteration's direction is used
    f_dev = _fvalues_dev(u, alpha, gamma)
    f: np.ndarray | None = None
    pending: tuple[np.ndarray, np.ndarray] | None = None  # (images that stepped, their band before)
    band = np.full(B, min(band0, n))
    its = np.zeros(B, dtype=int)
    running = run.copy()
    dead = ~P.live
    for it in range(1, max_iter + 1):
        if not running.any():
            break
        k = max(1, min(int(band[running].max()), n))
        absu = u.abs().masked_fill_(dead, math.inf)
        vals, S = torch.topk(absu, k, 1, largest=False)
        band_t = torch.as_tensor(band, device=dev)[:, None]
        inband = (torch.arange(k, device=dev)[None] < band_t) & torch.isfinite(vals)
        mu = vals.masked_fill(~inband, -math.inf).amax(1)
        umax = absu.masked_fill_(dead, 0).amax(1)
        mu = torch.where(mu > 0, mu, umax * 1e-12 + 1e-300)[:, None]
        psi = torch.where(u > 0, alpha, -gamma)
        aS, gS, uS = torch.gather(alpha, 1, S), torch.gather(gamma, 1, S), torch.gather(u, 1, S)
        psiS = torch.minimum(torch.maximum(-gS + (aS + gS) * (uS + mu) / (2 * mu), -gS), aS)
        psi.scatter_(1, S, torch.where(inband, psiS, torch.gather(psi, 1, S)))
        wS = ((aS + gS) / (2 * mu)).double() * inband
        g = P.matvec(psi).double()
        cnt.passes += 1
        AS = P.columns(S)
        H = torch.bmm(AS * wS[:, None, :], AS.transpose(1, 2))
        gHf = torch.cat([g[:, :, None], H, f_dev[:, None, None].expand(B, m, 1)], 2).cpu().numpy()  # one transfer
        fv = gHf[:, 0, -1]
        if f is None:
            f = fv.copy()
        elif pending is not None:
            stepped, band_before = pending
            done = stepped & (band_before <= band_min) & ((f - fv) <= ftol * np.abs(f))
            f[stepped] = fv[stepped]
            running &= ~done
            pending = None
            if not running.any():
                break
        its[running] = it
        d = newton_directions(gHf[:, :, 0], gHf[:, :, 1:-1], beta_np, lam, P.rowmask, running)
        bad = running & (~np.isfinite(d).all(1) | (np.abs(d).max(1) == 0.0))
        running &= ~bad
        d[~running] = 0.0
        neg = d < 0
        ratio = np.where(neg, lam / np.where(neg, -d, 1.0), np.inf)
        t_max = ratio.min(1)
        d_t = torch.from_numpy(d).to(dev)
        v = P.rmatvec(d_t)
        cnt.passes += 1
        t = line_search(u, v, alpha, gamma, t_max, running)
        stuck = running & (t <= 0.0)
        running &= ~(stuck & (band <= band_min))
        band[stuck] = np.maximum(band_min, band[stuck] // 4)
        step = running & ~stuck
        if not step.any():
            continue
        new = lam[step] + t[step, None] * d[step]
        nmax = np.abs(new).max(1, keepdims=True)
        blocked = (t[step] >= t_max[step])[:, None]
        new[blocked & neg[step] & (new <= 1e-12 * nmax)] = 0.0
        new = np.maximum(new, 0.0)
        lam[step] = new / (-(new * beta_np[step]).sum(1, keepdims=True))  # exactly on -beta.lam = 1
        u_new = P.rmatvec(torch.from_numpy(lam).to(dev))
        cnt.passes += 1
        u = torch.where(torch.from_numpy(step).to(dev)[:, None], u_new, u)
        f_dev = _fvalues_dev(u, alpha, gamma)
        pending = (step, band.copy())
        band[step] = np.maximum(band_min, band[step] // 3)
    return lam, u, its


def _narrowed_set(absu: torch.Tensor, live: torch.Tensor, size: int) -> torch.Tensor:
    inN = torch.zeros_like(live)
    inN.scatter_(1, torch.topk(absu.masked_fill(~live, math.inf), size, 1, largest=False).indices, True)
    return inN & live


def search(P: BatchScaled, lam: np.ndarray, alpha: torch.Tensor, gamma: torch.Tensor, run: np.ndarray,
           cnt: _Counter, max_newton: int, band0: int, band_min: int, info: list[dict],
           full_iterations: int | None = None, narrow: bool = True) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """:func:`.structured._search` on the running images: full Newton, then the narrowed search
    (each image its own narrowed set, padded to the largest with zero-weight columns)."""
    B, m, n = P.M.shape
    dev = P.M.device
    reduce = n >= structured._REDUCE_MIN_N
    first = min(max_newton, structured._FULL_NEWTON if full_iterations is None else full_iterations) if reduce else max_newton
    lam, u, its = dual_newton(P, lam, alpha, gamma, run, cnt, first, band0, band_min)
    if not reduce or not narrow:
        return lam, u, its
    nar = run & (its >= first)
    if not nar.any():
        return lam, u, its
    al, ga = alpha.double(), gamma.double()
    sdt = P.search_dtype
    a_s, g_s = alpha.to(sdt), gamma.to(sdt)
    size = min(max(n // structured._REDUCE_FRACTION, 2000), n)
    inN = _narrowed_set(u.abs(), P.live, size)
    rounds = np.zeros(B, dtype=int)
    red_iters = np.zeros(B, dtype=int)
    cols = torch.arange(n, device=dev).expand(B, n)
    for rnd in range(1, structured._REDUCE_ROUNDS + 1):
        if not nar.any():
            break
        rounds[nar] = rnd
        ref = torch.sign(u)
        coef = torch.where(ref > 0, al, -ga).masked_fill(inN, 0.0)
        col = P.matvec(coef, exact=True, scaled=False)  # the far coordinates' linear part, unscaled
        cnt.passes += 1
        counts = inN.sum(1)
        k = int(counts.max())
        pos = (inN.cumsum(1) - 1).masked_fill_(~inN, k)
        N = torch.zeros(B, k + 1, dtype=torch.long, device=dev).scatter_(1, pos, cols)[:, :k]
        keep = torch.arange(k, device=dev)[None] < counts[:, None]
        Mr = torch.cat([torch.gather(P.M, 2, N[:, None, :].expand(B, m, k)).double(), col[:, :, None]], 2)
        one = torch.ones(B, 1, dtype=torch.float64, device=dev)
        ar = torch.cat([torch.gather(al, 1, N) * keep, one], 1)
        gr = torch.cat([torch.gather(ga, 1, N) * keep, one * 0.0], 1)
        Pr = BatchScaled(M=Mr, inv_norm=P.inv_norm, beta=P.beta, live=torch.cat([keep, one.bool()], 1),
                         rowmask=P.rowmask)
        cr = _Counter()
        lam_r, _, itr = dual_newton(Pr, lam, ar, gr, nar, cr, 4 * max_newton, max(band_min, (k + 1) // structured._REDUCED_BAND),
                                    band_min)
        red_iters[nar] += itr[nar]
        u_r = P.rmatvec(torch.from_numpy(lam_r).to(dev))
        cnt.passes += 1
        flipped = (~inN) & (torch.sign(u_r) * ref < 0) & P.live
        nflip = flipped.sum(1).cpu().numpy()
        exact = nar & (nflip == 0)  # the model was exact at its minimiser: that is f's minimiser
        moving = nar & ~exact
        ex_t = torch.from_numpy(exact).to(dev)[:, None]
        lam[exact] = lam_r[exact]
        u = torch.where(ex_t, u_r, u)
        if moving.any():
            v = u_r - u
            t = line_search(u, v, a_s, g_s, np.ones(B), moving)
            lam[moving] = (lam + t[:, None] * (lam_r - lam))[moving]
            u = torch.where(torch.from_numpy(moving).to(dev)[:, None],
                            u + torch.as_tensor(t, dtype=u.dtype, device=dev)[:, None] * v, u)
            few = moving & (nflip <= size // 4)
            many = moving & ~few
            inN |= flipped & torch.from_numpy(few).to(dev)[:, None]
            if many.any():
                fresh = _narrowed_set(u.abs(), P.live, size)
                inN = torch.where(torch.from_numpy(many).to(dev)[:, None], fresh, inN)
        nar = moving
    if nar.any():  # the signs kept moving: Newton on all of A from here
        lam, u, more = dual_newton(P, lam, alpha, gamma, nar, cnt, max_newton, band_min, band_min)
        its[nar] += more[nar]
    sizes = inN.sum(1).cpu().numpy()
    for i in range(B):
        if rounds[i]:
            info[i]["narrowed_rounds"] = info[i].get("narrowed_rounds", 0) + int(rounds[i])
            info[i]["narrowed_size"] = int(sizes[i])
            info[i]["narrowed_iterations"] = info[i].get("narrowed_iterations", 0) + int(red_iters[i])
    return lam, u, its + red_iters


def dual_bounds(u: torch.Tensor, c: np.ndarray, lo: torch.Tensor | None, hi: torch.Tensor | None) -> np.ndarray:
    """:func:`.problem.dual_bound` for every image at once (one sort per image instead of the
    one-image bracketing search and its syncs): the smallest z with sum_i |u_i| min(z, room_i) >= c.

    These bounds steer the box's levels and seed the finish; each answer's certificate is
    recomputed by :func:`.problem.certify` on its own image, as for one LP.
    """
    a = u.abs()
    cc = torch.as_tensor(c, dtype=torch.float64, device=u.device)
    if lo is None or hi is None:
        total = a.sum(1, dtype=torch.float64)
        z = torch.where(total > 0, cc / total.clamp(min=1e-300), torch.full_like(total, math.inf))
    else:
        rm, order = torch.sort(torch.where(u > 0, -lo, hi), 1)
        a = torch.gather(a.double(), 1, order)
        cum_a = a.cumsum(1)
        cum_ar = (a * rm).cumsum(1)
        tot = cum_a[:, -1:]
        h = cum_ar + rm * (tot - cum_a)  # H at each room, in order
        hit = h >= cc[:, None]
        j = hit.int().argmax(1, keepdim=True)
        prev = (j - 1).clamp(min=0)
        base = torch.where(j > 0, torch.gather(cum_ar, 1, prev), torch.zeros_like(tot))
        slope = tot - torch.where(j > 0, torch.gather(cum_a, 1, prev), torch.zeros_like(tot))
        z = ((cc[:, None] - base) / slope.clamp(min=1e-300)).squeeze(1)
        z = torch.minimum(z, torch.gather(rm, 1, j).squeeze(1))
        z = torch.where(hit.any(1), z, torch.full_like(z, math.inf))
    out = z.cpu().numpy()
    return np.where(c <= 0.0, 0.0, out)


def _bounds(P: BatchScaled, lam: np.ndarray, lo: torch.Tensor | None, hi: torch.Tensor | None, which: np.ndarray,
            cnt: _Counter) -> np.ndarray:
    """The float64 lower bound each image's dual point proves (as the one-image search's)."""
    u = P.rmatvec(torch.from_numpy(lam).to(P.M.device), exact=True)
    cnt.passes += 1
    c = -(lam * P.beta.cpu().numpy()).sum(1)
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
    if lo is None or hi is None:
        w = P.live.to(A.dtype)
        lam, u, its = search(P, lam, w, w, every, cnt, max_newton, band0, band_min, info)
        iters += its
        z_lb = _bounds(P, lam, None, None, every, cnt)
        for j in np.flatnonzero(z_lb > structured._Z_INFEASIBLE).tolist():
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
            partial = outer == 0 and n >= structured._REDUCE_MIN_N
            lam, u, its = search(P, lam, alpha, gamma, going, cnt, max_newton,
                                 band0 if outer == 0 else band_min * 4, band_min, info,
                                 None if outer == 0 else 0, narrow=not partial)
            iters[going] += its[going]
            zl = _bounds(P, lam, lo, hi, going, cnt)
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
        ci.passes = cnt.passes
        if i in failed:
            out.append(Solution(None, math.inf, lam_i, "infeasible", failed[i], int(iters[i]), ci.passes, info[i]))
            continue
        u_i = u[i] if Pi.cols is None else u[i, Pi.cols]
        ti = time.perf_counter() - search_s
        out.append(finish(Pi, lam_i, u_i, float(z_lb[i]), int(iters[i]), ci, info[i], ti, tol, max_rounds))
    return out


__all__ = ["BatchScaled", "Scaled", "solve_batch", "stack"]
