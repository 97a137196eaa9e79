"""ExactMaxPool2d against nn.MaxPool2d, the module it claims to equal: values, gradients, batched
Jacobians and whole attacks on the demo models, bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlalp_core.attacks import make_attack
from mlalp_core.attacks.jacobian import batched_jacobian
from mlalp_core.attacks.targets import hide_one
from mlalp_core.data.demo import load_gallery
from mlalp_core.models.demo import load_demo_model
from mlalp_core.models.pooling import ExactMaxPool2d, with_nn_max_pools

CONFIGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),  # overlapping windows, padding (ResNet's stem pool)
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1)),
]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The float32 bit patterns: -0.0 differs from 0.0 and NaNs are compared too."""
    return t.contiguous().view(torch.int32)


def _hard_values(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Small integers (ties in every window), signed zeros, infinities and NaNs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, shape, generator=g).float()
    x[x == 0] = -0.0
    n = x.numel()
    for value, k in ((0.0, n // 5), (float("inf"), n // 40), (float("-inf"), n // 40), (float("nan"), n // 60)):
        x.view(-1)[torch.randperm(n, generator=g)[:k]] = value
    return x


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("shape", [(4, 5, 12, 12), (3, 7, 13, 11)])
def test_values_and_gradients_are_nn_max_pool2ds_bit_for_bit(cfg: dict, shape: tuple[int, ...]) -> None:
    ref, new = nn.MaxPool2d(**cfg), ExactMaxPool2d(**cfg)
    x = _hard_values(shape, seed=sum(shape))
    with torch.no_grad():
        assert torch.equal(_bits(new(x)), _bits(ref(x)))
    xr, xn = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_r, out_n = ref(xr), new(xn)
    assert torch.equal(_bits(out_n), _bits(out_r)) and out_n.is_contiguous()
    g = torch.randn(out_r.shape, generator=torch.Generator().manual_seed(1))
    (gr,) = torch.autograd.grad(out_r, xr, g)
    (gn,) = torch.autograd.grad(out_n, xn, g)
    # the same elements get the gradient (the same index picked in every window, ties included),
    # in the layout the layers before the pool always got
    assert torch.equal(_bits(gn), _bits(gr)) and gn.is_contiguous()


@pytest.mark.parametrize("cfg", CONFIGS[:2], ids=["2x2", "3x3s2p1"])
def test_batched_jacobians_and_second_derivatives_are_the_same(cfg: dict) -> None:
    ref, new = nn.MaxPool2d(**cfg), ExactMaxPool2d(**cfg)
    x = torch.randn(3, 4, 10, 10, generator=torch.Generator().manual_seed(2))
    weights = torch.arange(1.0, 7.0)

    def through(pool: nn.Module):
        return lambda z: pool(z * z).flatten(1)[:, :6] * weights

    for method in ("batched", "loop"):
        vr, jr = batched_jacobian(through(ref), x, method=method)
        vn, jn = batched_jacobian(through(new), x, method=method)
        assert torch.equal(_bits(vn), _bits(vr)) and torch.equal(_bits(jn), _bits(jr))
    # a gradient of a gradient (create_graph) through the pool
    second = []
    for pool in (ref, new):
        z = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(through(pool)(z).sum(), z, create_graph=True)
        (h,) = torch.autograd.grad((g * g).sum(), z)
        second.append(h)
    assert torch.equal(_bits(second[1]), _bits(second[0]))


def test_inputs_the_faster_kernel_does_not_take_go_to_nn_max_pool2d() -> None:
    ref, new = nn.MaxPool2d(2), ExactMaxPool2d(2)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    for inp in (x[0], x.transpose(2, 3), x.double(), x.contiguous(memory_format=torch.channels_last)):
        assert torch.equal(new(inp), ref(inp))
    with_idx = ExactMaxPool2d(2, return_indices=True)
    assert all(torch.equal(a, b) for a, b in zip(with_idx(x), nn.MaxPool2d(2, return_indices=True)(x)))


@pytest.mark.parametrize("name", ["demo-gcn", "demo-liw"])
def test_attacks_on_the_demo_models_are_the_same_as_with_nn_max_pool2d(name: str) -> None:
    model = load_demo_model(name, device="cpu")
    ref = with_nn_max_pools(model)
    assert any(type(m) is nn.MaxPool2d for m in ref.modules())
    assert not any(isinstance(m, ExactMaxPool2d) for m in ref.modules())
    gallery = load_gallery()
    x, y = gallery.images(model.input_size)[:6], gallery.labels()[:6]
    target = hide_one(y, seed=0, example_ids=list(range(6)))
    with torch.no_grad():
        assert torch.equal(_bits(model.network_outputs(x)), _bits(ref.network_outputs(x)))
    for attack, settings in (("fgsm", {"eps": 0.02}), ("pgd", {"eps": 0.02, "iterations": 3}), ("mla-lp", {})):
        a = make_attack(attack, model, device="cpu", **settings)(x, target)
        b = make_attack(attack, ref, device="cpu", **settings)(x, target)
        assert torch.equal(_bits(a.x_adv), _bits(b.x_adv)), attack
        assert torch.equal(a.success, b.success) and torch.equal(a.model_calls, b.model_calls), attack


@pytest.mark.parametrize("cfg", CONFIGS[:2], ids=["2x2", "3x3s2p1"])
def test_forward_mode_and_torch_func_transforms_give_the_same_derivatives(cfg: dict) -> None:
    from torch.autograd import forward_ad
    from torch.func import jacfwd, jacrev, jvp

    ref, new = nn.MaxPool2d(**cfg), ExactMaxPool2d(**cfg)
    g = torch.Generator().manual_seed(4)
    x, v = torch.randn(2, 3, 9, 9, generator=g), torch.randn(2, 3, 9, 9, generator=g)

    def through(pool: nn.Module):
        return lambda z: pool(z * z)

    for a, b in zip(jvp(through(ref), (x,), (v,)), jvp(through(new), (x,), (v,))):
        assert torch.equal(a, b)
    for transform in (jacfwd, jacrev):
        assert torch.equal(transform(through(new))(x[:1]), transform(through(ref))(x[:1]))
    for needs_grad in (False, True):  # dual tensors, with and without a backward pass to come
        tangents = []
        for pool in (ref, new):
            with forward_ad.dual_level():
                out = pool(forward_ad.make_dual(x.clone().requires_grad_(needs_grad), v))
                tangents.append(forward_ad.unpack_dual(out).tangent)
        assert torch.equal(tangents[1], tangents[0])
