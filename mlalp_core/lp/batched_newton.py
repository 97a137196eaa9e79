"""The structured solver's dual Newton method on a batch of LPs (:mod:`.dual_newton` for B images).

Every pass over A is one ``bmm``, every host sync serves all images, and the per-image pieces
(the l x l active-set Newton directions, the brackets of the exact line search) are batched
arrays. :class:`_Newton` runs it as a stepper, so that the narrowed search can restart some
images on new problems while the others go on.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .batched_problem import BatchScaled
from .solution import _Counter


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
