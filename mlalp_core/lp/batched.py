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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import search as one_image
from .finish import finish
from .problem import Prepared, dual_bounds, matvec64
from .solution import _Z_INFEASIBLE, Solution, _Counter

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
def _rowsum64(x: torch.Tensor) -> torch.Tensor:
    """Each row's sum, accumulated in float64, (B,) on x's device.

    On the CPU ``x.sum(1, dtype=float64)`` converts the whole (B, n) block first (46 ms for
    8 x 602,112 on one thread, mostly page faults of the fresh copy) while row by row it takes
    12 ms; on a GPU it is one kernel."""
    if x.device.type == "cpu" and x.dtype != torch.float64:
        return torch.stack([r.sum(dtype=torch.float64) for r in x])
    return x.sum(1, dtype=torch.float64)


def _fvalues_dev(u: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """f per image (B,), float64, left on the device."""
    return _rowsum64(u.clamp(min=0).mul_(alpha)) - _rowsum64(u.clamp(max=0).mul_(gamma))


def newton_directions(g: np.ndarray, H: np.ndarray, beta: np.ndarray, lam: np.ndarray, rowmask: np.ndarray,
                      run: np.ndarray) -> np.ndarray:
    """The one-image active-set Newton direction (:func:`.one_image._newton_direction`) for
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
    the one-image bracketing (:func:`.one_image._line_search`) with all brackets probed in the
    same pass, then the breakpoints inside each bracket in one batched top-k."""
    B = u.shape[0]
    dev = u.device
    av = v.abs()
    vpos = v > 0
    shrink = torch.where(vpos, gamma, alpha).mul_(av)
    c = torch.where(vpos, alpha, gamma).mul_(av).add_(shrink)
    buf = torch.empty_like(u)

    def raw(T: np.ndarray) -> torch.Tensor:
        """sum_i c_i sign((u_i + t v_i) v_i) for every image and each of its K trial steps
        T (B, K): a handful of broadcast operations for all of them, left on the device."""
        tt = torch.as_tensor(T, dtype=u.dtype, device=dev)
        probe = torch.addcmul(u[:, None, :], v[:, None, :], tt[:, :, None])
        probe.mul_(v[:, None, :]).sign_().mul_(c[:, None, :])
        return _rowsum64(probe.reshape(-1, u.shape[1])).reshape(T.shape)

    def slopes(r: np.ndarray) -> np.ndarray:
        # slope = sum c (sign + 1) / 2 - shrink
        return 0.5 * r + (half_sum - shrink_sum)[:, None]

    # One sync for the sums and the slopes at 0 and at four trial steps 1, 16, 256, 4096 (capped at
    # t_max): the one-image search probes them one sync each.
    tau = np.minimum(t_max, 1.0)
    T0 = np.minimum(tau[:, None] * (16.0 ** np.arange(4))[None], t_max[:, None])
    T0 = np.concatenate([np.zeros((B, 1)), T0], 1)
    first = torch.cat([torch.stack([_rowsum64(shrink), 0.5 * _rowsum64(c), 0.5 * _rowsum64(c.masked_fill(u != 0, 0))], 1),
                       raw(T0)], 1).cpu().numpy()
    shrink_sum, half_sum, kink = first[:, 0], first[:, 1], first[:, 2]
    S0 = slopes(first[:, 3:])
    del shrink, vpos, av
    S0[:, 0] += kink  # at a kink the step moves away from 0 whichever way it goes: count it whole
    t = np.zeros(B)
    go = run & (S0[:, 0] < 0.0)
    t_lo, s_lo = np.zeros(B), S0[:, 0].copy()
    t_hi = np.full(B, math.inf)
    open_ = go.copy()  # not bracketed yet
    for j in range(1, 5):
        closed = open_ & (S0[:, j] >= 0.0)
        t_hi[closed] = T0[closed, j]
        capped = open_ & ~closed & (T0[:, j] >= t_max)
        t[capped] = t_max[capped]
        go &= ~capped
        open_ &= ~closed & ~capped
        t_lo[open_], s_lo[open_] = T0[open_, j], S0[open_, j]
    t_hi[open_] = np.minimum(t_max[open_], t_lo[open_] * 16.0)
    for _ in range(4):  # rarely: further out, one probe per sync
        if not open_.any():
            break
        s_hi = slopes(raw(np.where(open_, t_hi, 0.0)[:, None]).cpu().numpy())[:, 0]
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
        # narrow each bracket on a geometric grid of 8 points, all probed at once before one sync
        # (the one-image search bisects three times, one sync each)
        bottom = np.where(t_lo > 0, t_lo, t_hi / 4096.0)
        ratio = np.where(fin, t_hi / np.where(fin, bottom, 1.0), 1.0)
        grid = np.where(fin[:, None], bottom[:, None] * ratio[:, None] ** (np.arange(8)[None] / 8.0), 0.0)
        sg = slopes(raw(grid).cpu().numpy())
        for j in range(8):  # the bracket's new ends: the first grid point at slope >= 0, the last below
            up = fin & (sg[:, j] >= 0.0) & (grid[:, j] < t_hi) & (grid[:, j] > t_lo)
            t_hi[up] = grid[up, j]
        for j in range(8):
            dn = fin & (sg[:, j] < 0.0) & (grid[:, j] > t_lo) & (grid[:, j] < t_hi)
            t_lo[dn], s_lo[dn] = grid[dn, j], sg[dn, j]
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


class _Newton:
    """The batched dual Newton method (:func:`.one_image._dual_newton`) as a stepper: each
    :meth:`step` is one iteration of every running image, and :meth:`restart` puts some images
    on new rows of ``P`` while the others go on, so that in the narrowed search no image waits
    for another's round to end.
    """

    def __init__(self, P: BatchScaled, lam: np.ndarray, alpha: torch.Tensor, gamma: torch.Tensor, run: np.ndarray,
                 cnt: _Counter, max_iter: int, band0: int | np.ndarray, band_min: int, ftol: float = 1e-12) -> None:
        B, m, n = P.M.shape
        self.P, self.cnt, self.max_iter, self.band_min, self.ftol = P, cnt, max_iter, band_min, ftol
        self.dev = P.M.device
        sdt = P.search_dtype
        self.alpha, self.gamma = alpha.to(sdt), gamma.to(sdt)
        self.beta = P.beta.cpu().numpy()
        self.lam = lam.copy()
        self.u = P.rmatvec(torch.from_numpy(self.lam).to(self.dev))
        cnt.passes += 1
        # f after a step is fetched with the next iteration's transfer (one sync fewer per
        # iteration); the stopping test then runs before that iteration's direction is used
        self.f_dev = _fvalues_dev(self.u, self.alpha, self.gamma)
        self.f = np.zeros(B)
        self.known = np.zeros(B, dtype=bool)
        self.pending = np.zeros(B, dtype=bool)  # stepped last iteration: stopping test due
        self.band_before = np.zeros(B, dtype=int)
        self.band = np.minimum(np.broadcast_to(np.asarray(band0), (B,)), n).astype(int)
        self.its = np.zeros(B, dtype=int)
        self.running = run.copy()

    def restart(self, which: np.ndarray, lam: np.ndarray, band0: np.ndarray) -> None:
        """Images ``which`` start afresh from ``lam`` on their (new) rows of ``self.P``."""
        self.lam[which] = lam[which]
        w = torch.from_numpy(which).to(self.dev)
        u_new = self.P.rmatvec(torch.from_numpy(self.lam).to(self.dev))
        self.cnt.passes += 1
        self.u = torch.where(w[:, None], u_new, self.u)
        self.f_dev = torch.where(w, _fvalues_dev(self.u, self.alpha, self.gamma), self.f_dev)
        self.known[which] = False
        self.pending[which] = False
        self.band[which] = np.minimum(band0[which], self.P.M.shape[2])
        self.its[which] = 0
        self.running[which] = True

    def grow(self, extra: int) -> None:
        """``extra`` more (dead) columns for every image (a narrowed set outgrew the stack)."""
        P = self.P
        B, m, _ = P.M.shape
        P.M = torch.cat([P.M, P.M.new_zeros(B, m, extra)], 2)
        P.live = torch.cat([P.live, P.live.new_zeros(B, extra)], 1)
        self.alpha = torch.cat([self.alpha, self.alpha.new_zeros(B, extra)], 1)
        self.gamma = torch.cat([self.gamma, self.gamma.new_zeros(B, extra)], 1)
        self.u = torch.cat([self.u, self.u.new_zeros(B, extra)], 1)

    def step(self) -> None:
        P, dev, band, running = self.P, self.dev, self.band, self.running
        B, m, n = P.M.shape
        alpha, gamma, u, lam = self.alpha, self.gamma, self.u, self.lam
        running &= self.its < self.max_iter
        if not running.any():
            return
        dead = ~P.live
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
        self.cnt.passes += 1
        AS = P.columns(S)
        H = torch.bmm(AS * wS[:, None, :], AS.transpose(1, 2))
        gHf = torch.cat([g[:, :, None], H, self.f_dev[:, None, None].expand(B, m, 1)], 2).cpu().numpy()
        fv = gHf[:, 0, -1]
        new = ~self.known
        self.f[new] = fv[new]
        self.known[:] = True
        if self.pending.any():
            p = self.pending
            done = p & (self.band_before <= self.band_min) & ((self.f - fv) <= self.ftol * np.abs(self.f))
            self.f[p] = fv[p]
            running &= ~done
            self.pending = np.zeros(B, dtype=bool)
            if not running.any():
                return
        self.its[running] += 1
        d = newton_directions(gHf[:, :, 0], gHf[:, :, 1:-1], self.beta, lam, P.rowmask, running)
        bad = running & (~np.isfinite(d).all(1) | (np.abs(d).max(1) == 0.0))
        running &= ~bad
        d[~running] = 0.0
        neg = d < 0
        ratio = np.where(neg, lam / np.where(neg, -d, 1.0), np.inf)
        t_max = ratio.min(1)
        v = P.rmatvec(torch.from_numpy(d).to(dev))
        self.cnt.passes += 1
        t = line_search(u, v, alpha, gamma, t_max, running)
        stuck = running & (t <= 0.0)
        running &= ~(stuck & (band <= self.band_min))
        band[stuck] = np.maximum(self.band_min, band[stuck] // 4)
        step = running & ~stuck
        if not step.any():
            return
        new_lam = lam[step] + t[step, None] * d[step]
        nmax = np.abs(new_lam).max(1, keepdims=True)
        blocked = (t[step] >= t_max[step])[:, None]
        new_lam[blocked & neg[step] & (new_lam <= 1e-12 * nmax)] = 0.0
        new_lam = np.maximum(new_lam, 0.0)
        lam[step] = new_lam / (-(new_lam * self.beta[step]).sum(1, keepdims=True))  # exactly on -beta.lam = 1
        u_new = P.rmatvec(torch.from_numpy(lam).to(dev))
        self.cnt.passes += 1
        self.u = torch.where(torch.from_numpy(step).to(dev)[:, None], u_new, u)
        self.f_dev = _fvalues_dev(self.u, alpha, gamma)
        self.pending = step
        self.band_before = band.copy()
        band[step] = np.maximum(self.band_min, band[step] // 3)


def dual_newton(P: BatchScaled, lam: np.ndarray, alpha: torch.Tensor, gamma: torch.Tensor, run: np.ndarray,
                cnt: _Counter, max_iter: int, band0: int, band_min: int, ftol: float = 1e-12,
                ) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """:func:`.one_image._dual_newton` on every running image at once; the others keep their
    point. Returns (lam (B, l), u (B, n), iterations (B,))."""
    nt = _Newton(P, lam, alpha, gamma, run, cnt, max_iter, band0, band_min, ftol)
    while nt.running.any():
        nt.step()
    return nt.lam, nt.u, nt.its


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
