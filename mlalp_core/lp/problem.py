"""Validation, reduction and scaling shared by every backend, and the float64 certificate.

Every backend solves the same reduced, scaled problem

    min z  s.t.  Ah rho <= beta,  |rho_i| <= z,  lo_i <= rho_i <= hi_i

where Ah has the non-zero rows of A scaled to unit l1 norm (applied as an operator, never as a
copy of A) and only the columns that can matter, and rho = r / s with s = max_j(-b_j / ||A_j||_1) (a lower bound on z, so the scaled
optimum is >= 1). Results are mapped back and certified on the original data in float64 by
:func:`certify`, whatever the backend: the gap a result reports is proven, not claimed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError, SolverError
from .selection import concave_crossing, smallest_crossing

#: Columns per block when a float32 matrix is used in float64 (bounded temporary memory).
_CHUNK = 1 << 13


@dataclass
class Scaled:
    """The scaled matrix Ah = diag(1/||A_j||_1) M as an operator; M is A (kept rows/columns) as
    given, in its own dtype and on its own device: no float64 copy of A is ever made.

    ``exact=True`` products are computed in float64 (in column chunks when M is float32);
    the others in M's dtype, which is what the search phase needs.
    """

    M: torch.Tensor  # (m, n) kept rows/columns of A, original dtype
    inv_norm: torch.Tensor  # (m,) float64: 1 / ||A_j||_1
    beta: torch.Tensor  # (m,) float64, min(beta) == -1
    lo: torch.Tensor | None  # (n,) float64 scaled bounds, or None (no box)
    hi: torch.Tensor | None
    rows: torch.Tensor  # (m,) original row indices
    cols: torch.Tensor | None  # (n,) original column indices, None = all
    row_norm: torch.Tensor  # (m,)
    s: float  # z scale

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.M.shape[0]), int(self.M.shape[1]))

    @property
    def device(self) -> torch.device:
        return self.M.device

    @property
    def search_dtype(self) -> torch.dtype:
        return self.M.dtype

    def rmatvec(self, lam: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Ah^T lam, (n,)."""
        w = lam.double() * self.inv_norm
        if not exact or self.M.dtype == torch.float64:
            return w.to(self.M.dtype) @ self.M
        out = torch.empty(self.M.shape[1], dtype=torch.float64, device=self.M.device)
        for a, b, block in blocks64(self.M):
            torch.mv(block.t(), w, out=out[a:b])
        return out

    def matvec(self, v: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Ah v for v of shape (n,) or (n, k)."""
        out = matvec64(self.M, v) if exact else self.M @ v.to(self.M.dtype)
        scale = self.inv_norm if out.dim() == 1 else self.inv_norm[:, None]
        return out.double() * scale if exact else out * scale.to(out.dtype)

    def columns(self, idx: torch.Tensor) -> torch.Tensor:
        """Ah[:, idx] in float64."""
        # index_select, not M[:, idx]: the advanced-indexing gather along dim 1 took 3x as long
        return torch.index_select(self.M, 1, idx).double() * self.inv_norm[:, None]

    def gram(self) -> torch.Tensor:
        """Ah Ah^T in float64 (m x m)."""
        G = torch.zeros(self.M.shape[0], self.M.shape[0], dtype=torch.float64, device=self.M.device)
        for _, _, c in blocks64(self.M):
            G.addmm_(c, c.t())
        return G * self.inv_norm[:, None] * self.inv_norm[None, :]

    def col_scale(self) -> torch.Tensor:
        """1 / ||Ah[:, i]||_2 in the search dtype (cached): how far lam must move for u_i = Ah_i^T lam
        to change by |u_i|, so |u_i| times it says how near its kink a coordinate is (with
        heavy-tailed column norms, |u_i| alone picks the small columns, not the ones that flip)."""
        cs = self.__dict__.get("_col_scale")
        if cs is None:
            M = self.M
            l, n = M.shape
            w = self.inv_norm.to(M.dtype)[:, None]
            chunk = _CHUNK if M.device.type == "cpu" else n
            buf = torch.empty(l, min(chunk, n), dtype=M.dtype, device=M.device)
            ones = torch.ones(l, dtype=M.dtype, device=M.device)
            cs = torch.empty(n, dtype=M.dtype, device=M.device)
            for a in range(0, n, chunk):
                b = min(a + chunk, n)
                block = torch.mul(M[:, a:b], w, out=buf[:, :b - a]).square_()
                torch.mv(block.t(), ones, out=cs[a:b])
            cs = cs.sqrt_().clamp_(min=torch.finfo(cs.dtype).tiny).reciprocal_()
            self.__dict__["_col_scale"] = cs
        return cs

    def box(self, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(lo, hi) in ``dtype``, cached: the search's steering bounds use A's own dtype (a float32
        bound over d = 602k coordinates in half the time; the certificates stay float64)."""
        if self.lo is None or self.hi is None or dtype == self.lo.dtype:
            return self.lo, self.hi
        key = f"_box_{dtype}"
        if key not in self.__dict__:
            self.__dict__[key] = (self.lo.to(dtype), self.hi.to(dtype))
        return self.__dict__[key]

    def dense64(self) -> torch.Tensor:
        """Ah materialised in float64 (for the full-LP reference backends only)."""
        return self.M.double() * self.inv_norm[:, None]


def matvec64(M: torch.Tensor, v) -> torch.Tensor:
    """M v in float64 for a matrix M (m, n) of any float dtype, v (n,) or (n, k) of any float dtype,
    or a list of k vectors (n,) (then (m, k), without stacking them); a float32 M is converted in
    column blocks (bounded temporary memory, never a float64 copy of M), and so is v."""
    vs = v if isinstance(v, (list, tuple)) else None
    if vs is None and M.dtype == torch.float64:
        return M @ v.double()
    shape = (M.shape[0], len(vs)) if vs is not None else (M.shape[0],) + tuple(v.shape[1:])
    out = torch.zeros(shape, dtype=torch.float64, device=M.device)
    for a, b, block in blocks64(M):
        if vs is not None:
            for j, x in enumerate(vs):
                out[:, j].add_(block @ x[a:b].double())
        elif v.dim() == 1:
            out.addmv_(block, v[a:b].double())
        else:
            out.addmm_(block, v[a:b].double())
    return out


def blocks64(M: torch.Tensor):
    """(start, stop, M[:, start:stop] in float64) over column blocks, for the exact passes.

    One small buffer serves every block: a fresh float64 block per chunk (10 MB at 65,536
    columns) cost more in page faults than the product itself (an exact pass at d = 602k:
    ~30 ms that way, ~2.5 float32 passes this way), and a block of 8,192 columns stays in cache.
    """
    n = M.shape[1]
    if M.dtype == torch.float64:
        yield 0, n, M
        return
    chunk = _CHUNK if M.device.type == "cpu" else _CHUNK << 4  # on a GPU: fewer, larger launches
    buf = torch.empty(M.shape[0], min(chunk, n), dtype=torch.float64, device=M.device)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        block = buf[:, :b - a]
        block.copy_(M[:, a:b])
        yield a, b, block


@dataclass
class Prepared:
    """Either a problem to solve (``scaled``) or an answer found during preparation."""

    l: int
    d: int
    device: torch.device
    b: torch.Tensor  # (l,) float64 original
    lo: torch.Tensor | None  # (d,) float64 original
    hi: torch.Tensor | None
    scaled: Scaled | None = None
    trivial: str | None = None  # "zero" (r = 0 optimal) or "infeasible"
    farkas: torch.Tensor | None = None  # (l,) certificate when trivially infeasible
    message: str = ""


def _as_tensor(a, device=None) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(device=device if device is not None else a.device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)


def _as_matrix(A) -> torch.Tensor:
    """A as a float tensor without copying when it already is one (float32 stays float32)."""
    if isinstance(A, torch.Tensor):
        A = A.detach()
        return A if A.dtype in (torch.float32, torch.float64) else A.double()
    arr = np.asarray(A)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _abs_sums(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(each row's l1 norm in float64, which columns have a non-zero entry): one pass over M.

    Both are products with |M| of one block at a time (a block's |.| in a reused buffer, then
    two matrix-vector products): torch's own reductions over a (20, 602,112) matrix took 18-29 ms
    each here, as long as ten passes over A.
    """
    l, n = M.shape
    chunk = _CHUNK if M.device.type == "cpu" else n
    buf = torch.empty(l, min(chunk, n), dtype=M.dtype, device=M.device)
    ones_c = torch.ones(buf.shape[1], dtype=M.dtype, device=M.device)
    ones_r = torch.ones(l, dtype=M.dtype, device=M.device)
    rows = torch.zeros(l, dtype=torch.float64, device=M.device)
    cols = torch.empty(n, dtype=M.dtype, device=M.device)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        block = torch.abs(M[:, a:b], out=buf[:, :b - a])
        rows += torch.mv(block, ones_c[:b - a]).double()
        torch.mv(block.t(), ones_r, out=cols[a:b])
    return rows, cols > 0  # a sum of |.| is 0 only where every entry is (NaN stays NaN: not > 0)


def prepare(A, b, lo=None, hi=None, drop_zero_rows: bool = False) -> Prepared:
    """Validate, drop what cannot matter, and scale (as an operator: A itself is not copied).

    An all-zero row of A with b < 0 makes the LP infeasible (no r can satisfy it): that is the
    exact answer and the default. ``drop_zero_rows=True`` drops such rows before solving, as the
    MLA-LP authors' code does (their LP then ignores a label whose gradient vanished)."""
    M = _as_matrix(A)
    if M.dim() != 2:
        raise InvalidInputError(f"A must be a matrix (l, d), got shape {tuple(M.shape)}")
    l, d = M.shape
    dev = M.device
    b64 = _as_tensor(b, dev).flatten()
    if b64.numel() != l:
        raise InvalidInputError(f"b must have {l} entries (one per row of A), got {b64.numel()}")
    norms, nonzero_cols = _abs_sums(M)
    if not (torch.isfinite(norms).all() and torch.isfinite(b64).all()):
        raise InvalidInputError("A and b must be finite (no NaN or inf)")
    lo64 = hi64 = None
    if lo is not None or hi is not None:
        lo64 = _as_tensor(lo, dev).flatten() if lo is not None else torch.full((d,), -np.inf, dtype=torch.float64, device=dev)
        hi64 = _as_tensor(hi, dev).flatten() if hi is not None else torch.full((d,), np.inf, dtype=torch.float64, device=dev)
        if lo64.numel() == 1:
            lo64 = lo64.expand(d)
        if hi64.numel() == 1:
            hi64 = hi64.expand(d)
        if lo64.numel() != d or hi64.numel() != d:
            raise InvalidInputError(f"lo and hi must have {d} entries (one per column of A)")
        lo_max, hi_min = float(lo64.max()), float(hi64.min())  # a NaN anywhere makes these NaN
        if math.isnan(lo_max) or math.isnan(hi_min):
            raise InvalidInputError("bounds must not be NaN")
        if lo_max > 1e-12 or hi_min < -1e-12:
            raise InvalidInputError("bounds must contain 0 (lo <= 0 <= hi): r = 0 must satisfy them")
        if lo_max > 0.0:
            lo64 = lo64.clamp(max=0.0)
        if hi_min < 0.0:
            hi64 = hi64.clamp(min=0.0)
    prep = Prepared(l=l, d=d, device=dev, b=b64, lo=lo64, hi=hi64)

    zero_rows = norms == 0
    bad = zero_rows & (b64 < 0)
    if bool(bad.any()) and not drop_zero_rows:
        j = int(bad.nonzero()[0])
        farkas = torch.zeros(l, dtype=torch.float64, device=dev)
        farkas[j] = 1.0
        prep.trivial, prep.farkas = "infeasible", farkas
        prep.message = f"row {j} of A is zero but b[{j}] = {float(b64[j]):.3g} < 0: no r can satisfy it"
        return prep
    keep_rows = (~zero_rows).nonzero().flatten()
    need = b64[keep_rows] < 0
    if not bool(need.any()):
        prep.trivial, prep.message = "zero", "b >= 0: r = 0 is optimal"
        return prep

    # Columns that can matter: a non-zero entry in a kept row, and room to move on some side.
    Mk = M if keep_rows.numel() == l else M[keep_rows]
    useful = nonzero_cols  # the rows not kept are zero: the same over the kept rows
    if lo64 is not None and hi64 is not None:
        useful &= lo64 != hi64  # lo <= 0 <= hi: room on some side
    cols = None
    if not bool(useful.all()):
        cols = useful.nonzero().flatten()
        Mk = torch.index_select(Mk, 1, cols)
    n_k = norms[keep_rows]
    beta = b64[keep_rows] / n_k
    s = float(-beta.min())
    beta = beta / s
    lo_s: torch.Tensor | None = None
    hi_s: torch.Tensor | None = None
    if lo64 is not None and hi64 is not None:
        lo_s = (lo64 if cols is None else lo64[cols]) / s
        hi_s = (hi64 if cols is None else hi64[cols]) / s
    if Mk.shape[1] == 0:
        farkas = torch.zeros(l, dtype=torch.float64, device=dev)
        farkas[keep_rows[need.nonzero()[0]]] = 1.0
        prep.trivial, prep.farkas = "infeasible", farkas
        prep.message = "no pixel can move in a direction that matters (all bounds are zero)"
        return prep
    prep.scaled = Scaled(M=Mk, inv_norm=1.0 / n_k, beta=beta, lo=lo_s, hi=hi_s, rows=keep_rows, cols=cols,
                         row_norm=n_k, s=s)
    return prep


def room(u: torch.Tensor, lo: torch.Tensor | None, hi: torch.Tensor | None) -> torch.Tensor:
    """How far each coordinate may move in the direction -sign(u) that lowers lam^T A r."""
    if lo is None or hi is None:
        return torch.full_like(u, float("inf"))
    return torch.where(u > 0, lo, hi).abs_()  # lo <= 0 <= hi: -lo where u > 0 (no negated copy of lo)


def dual_bound(u: torch.Tensor, c: float, lo: torch.Tensor | None, hi: torch.Tensor | None,
               sort: bool | None = None, rm: torch.Tensor | None = None) -> float:
    """The lower bound a dual point proves: the smallest z with sum_i |u_i| min(z, room_i) >= c.

    u = A^T lam, c = -b^T lam. The aggregated constraint lam^T A r <= lam^T b is a relaxation of
    A r <= b, and its optimum is exactly this z; ``inf`` certifies infeasibility. ``sort``
    (default: on a GPU, where the sort-free search's dozen host syncs cost more than one sort)
    finds it by :func:`dual_bounds` and keeps it only if a direct float64 sum confirms that no
    smaller z reaches c, so that the bound is never too large. ``rm``: room(u, lo, hi), where
    the caller has it.
    """
    if c <= 0.0:
        return 0.0
    a = u.abs()
    if lo is None or hi is None:
        total = float(a.sum(dtype=torch.float64))
        return c / total if total > 0 else float("inf")
    if u.device.type == "cuda" if sort is None else sort:
        z = float(dual_bounds(u[None], np.array([c]), lo[None], hi[None])[0])
        if math.isinf(z):
            return smallest_crossing(room(u, lo, hi), None, a, c)  # the search proves infeasibility
        below = math.nextafter(z, 0.0)
        if float((a.double() * room(u, lo, hi).clamp(max=below)).sum()) < c * (1 + 1e-12):  # as smallest_crossing's check
            return z
    if rm is None:
        rm = room(u, lo, hi)
    # u_i = 0 weighs nothing; a float32 u (a steering bound) stays float32 if the box is float32 too
    return concave_crossing(rm, a if a.dtype == rm.dtype else a.double(), c)


def dual_bounds(u: torch.Tensor, c: np.ndarray, lo: torch.Tensor | None, hi: torch.Tensor | None) -> np.ndarray:
    """:func:`dual_bound` for a batch (B, n) at once, by one sort per row instead of the bracketing
    search and its host syncs: the smallest z with sum_i |u_i| min(z, room_i) >= c_b.

    Exact up to the rounding of the sorted cumulative sums (:func:`dual_bound` checks its
    answer against a direct sum before it certifies with it).
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


#: Relative excess of a certified lower bound over z that rounding may explain; beyond it (after
#: allowing for the solution's own violations) the certificate contradicts the solution.
CERT_RTOL = 1e-9


class CertificateError(SolverError):
    """A dual bound above the value of the solution it certifies: a bug, never a result."""


def certify(prep: Prepared, rho: torch.Tensor, lam_s: torch.Tensor, r: torch.Tensor,
            known: tuple | None = None) -> tuple[float, float]:
    """(lower bound proved by the scaled dual lam_s, max violation of A r <= b and of the box).

    Computed in float64 on the row-scaled matrix, which is the original data up to one rounding:
    the violation of row j is ||A_j||_1 * s * (Ah rho - beta)_j, in the units of b. ``known``:
    (Ah^T lam_s, the bound it proves, Ah rho or None) as the solver computed them, by these same
    float64 products on these same data (each is a pass over A: ~8 ms at d = 602k).

    The bound is returned as proved, never capped at z = ||r||_inf: by weak duality it cannot
    exceed z for a feasible r, so a bound above z means a wrong certificate or a wrong r, and
    raises :class:`CertificateError` instead of reporting a gap of 0. Only what r's own violations
    explain is allowed (beyond rounding): r is feasible for b + v and the box widened by its
    violation, lam bounds that problem too, and the bound may exceed z by the factor between the
    two bounds (so an error in the bound itself, a lost scale factor, is never explained away).
    """
    P = prep.scaled
    assert P is not None
    u, bound, image = known if known is not None else (None, None, None)
    if image is None:
        image = P.matvec(rho, exact=True)
    excess = image - P.beta  # scaled units
    viol = float((excess * (P.row_norm * P.s)).max().clamp(min=0.0))
    box_viol = 0.0
    if prep.lo is not None and prep.hi is not None:
        box_viol = max(float((prep.lo - r).max().clamp(min=0.0)), float((r - prep.hi).max().clamp(min=0.0)))
    viol = max(viol, box_viol)
    if u is None:
        u = P.rmatvec(lam_s, exact=True)
    if bound is None:
        bound = dual_bound(u, float(-(P.beta @ lam_s)), P.lo, P.hi)
    lower = P.s * bound
    z = float(r.abs().max()) if r.numel() else 0.0
    if lower > z * (1 + CERT_RTOL):
        # what lam proves for the problem r does satisfy: A r <= b + v, the box widened by box_viol
        c_v = float(-((P.beta + excess.clamp(min=0.0)) @ lam_s))
        w = box_viol / P.s
        relaxed = dual_bound(u, c_v, None if P.lo is None else P.lo - w, None if P.hi is None else P.hi + w)
        allowed = lower * (relaxed / bound) if math.isfinite(bound) else P.s * relaxed
        if allowed > z * (1 + CERT_RTOL):
            raise CertificateError(
                f"the LP certificate contradicts its solution: lower bound {lower:.17g} > z = {z:.17g} (max "
                f"violation {viol:.3g}); this is a bug in mlalp's LP solver or certificate, please report it")
    return lower, viol
