"""A batch of scaled LPs over one (B, l, d) stack: the batched search's problem.

Images differ in which rows and columns matter; the stack keeps all of them and gives the ones
that do not matter zero weight (a row outside the kept set has a zero scale and a zero beta, so
its dual stays 0; a column outside has zero slopes and never enters a Newton band).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .problem import Prepared

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
