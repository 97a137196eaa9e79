"""Batched Jacobians of per-label quantities with respect to the [0,1] pixels.

For a batch of B images and a function giving l values per image (per-label losses for MLA-LP,
sigmoid outputs for ML-DeepFool), the (B, l, 3, H, W) Jacobian comes from ONE forward pass and
one vectorised backward (``autograd.grad(..., is_grads_batched=True)``), instead of the l
sequential backward passes of the authors' code. Rows of different images never mix, which
holds for every model in eval mode (BatchNorm uses running statistics).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import torch

Method = Literal["batched", "loop"]


def batched_jacobian(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    method: Method = "batched",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(values, jac)``: values = fn(x) of shape (B, l), jac of shape (B, l, *x.shape[1:]).

    ``fn`` must map each image to its own l values (no mixing across the batch).
    ``method="loop"`` does l backward passes (the reference the batched form is tested against).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        values = fn(x)
        if values.dim() != 2 or values.shape[0] != x.shape[0]:
            raise ValueError(f"fn must return (B, l) values, got {tuple(values.shape)}")
        b, l = values.shape
        if method == "batched":
            try:
                eye = torch.eye(l, dtype=values.dtype, device=values.device)
                grad_out = eye[:, None, :].expand(l, b, l)
                with warnings.catch_warnings():
                    # A missing vmap rule degrades to a slow loop inside torch; it still agrees.
                    warnings.filterwarnings("ignore", message=".*There is a performance drop.*")
                    (jac,) = torch.autograd.grad(values, x, grad_out, is_grads_batched=True)
                return values.detach(), jac.transpose(0, 1)
            except RuntimeError as exc:  # an op with no batching rule at all
                warnings.warn(f"batched backward unavailable ({exc}); using {l} sequential passes")
        elif method != "loop":
            raise ValueError(f"unknown Jacobian method {method!r}: use 'batched' or 'loop'")
        rows = []
        for j in range(l):
            (g,) = torch.autograd.grad(values[:, j].sum(), x, retain_graph=j < l - 1)
            rows.append(g)
        return values.detach(), torch.stack(rows, dim=1)
