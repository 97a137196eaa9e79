"""Max pooling that computes what ``nn.MaxPool2d`` computes, bit for bit, several times faster on the CPU.

PyTorch's CPU kernel for max pooling over an NCHW (contiguous) tensor walks one (image, channel)
plane at a time; its kernel for channels-last tensors runs along the channels with vector
instructions and, with the layout changes around it, takes a quarter of the time on the demo
trunk's 2x2 pools without gradients and about half with them (``bench/max_pool.py``), where the
NCHW kernel took about 40 % of a forward pass. Both kernels pick, in each window, the first element in row-major order greater
than all before it, a NaN taking the place of any number: the values and the indices are the
same, down to the sign of a zero. The backward pass is the NCHW kernel's own, with those
indices: gradients are the same bits too, and reach the layers before the pool in the layout
they always had (a convolution's backward pass may pick other kernels for another layout).
Everywhere but on the CPU, and inside torch.func's transforms (vmap, jacrev, jacfwd: they cannot
change a layout), the module is ``nn.MaxPool2d``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_CL = torch.channels_last


class _Pool(torch.autograd.Function):
    """Forward on the channels-last kernel, backward on the NCHW one (the same indices). In the
    form with ``ctx`` in ``forward``: the form with ``setup_context`` binds the arguments to the
    signature at every call (twice the overhead). A batched backward pass (``is_grads_batched``,
    the Jacobians of attacks.jacobian) runs ``backward`` on batched gradients as it is."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, params: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        out, idx = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=_CL), *params)
        idx = idx.contiguous()
        ctx.params = params
        ctx.save_for_backward(x, idx)
        ctx.save_for_forward(idx)
        ctx.mark_non_differentiable(idx)
        return out.contiguous(), idx

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_idx: Any) -> tuple[torch.Tensor, None]:
        x, idx = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, *ctx.params, idx), None

    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor, _params: Any) -> tuple[torch.Tensor, None]:
        """Forward-mode AD (dual tensors): each output's tangent is its input's at the index."""
        (idx,) = ctx.saved_tensors
        return tangent.flatten(2).gather(2, idx.flatten(2)).view(idx.shape), None


class ExactMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d``, the same numbers and gradients, run on the faster kernel on the CPU
    (float 4-D inputs in NCHW; anything else goes to ``F.max_pool2d`` as before)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dim() != 4 or not x.is_floating_point() or self.return_indices
                or not x.is_contiguous() or torch._C._are_functorch_transforms_active()):
            return super().forward(x)  # (torch.func's transforms cannot change a layout inside vmap)
        kernel, stride, padding, dilation = (_pair(v) for v in (self.kernel_size, self.stride, self.padding,
                                                                self.dilation))
        if torch.is_grad_enabled() and x.requires_grad:
            return _Pool.apply(x, (kernel, stride, padding, dilation, bool(self.ceil_mode)))[0]
        return F.max_pool2d(x.contiguous(memory_format=_CL), kernel, stride, padding, dilation,
                            bool(self.ceil_mode)).contiguous()


def _pair(v: int | tuple[int, ...]) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def with_nn_max_pools(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with ``nn.MaxPool2d`` in place of every :class:`ExactMaxPool2d` (the
    reference the tests and ``bench/max_pool.py`` hold it to; the same weights)."""
    ref = copy.deepcopy(model)
    for module in list(ref.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ExactMaxPool2d):
                setattr(module, name, nn.MaxPool2d(child.kernel_size, child.stride, child.padding, child.dilation,
                                                   ceil_mode=child.ceil_mode))
    return ref
