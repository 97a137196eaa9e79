"""The budget projections of the gradient attacks (attacks/gradient.py), from their definitions:
the Euclidean projection onto the l_2 ball {||d|| <= eps} leaves a point inside the ball where it is
and scales one outside onto the sphere; the l_inf projection clips each coordinate to [-eps, eps]
(both signs); then x + d is clipped to [0,1]. And what a user sees: PGD-l2 reports the distortion
it needed, not the whole budget."""

from __future__ import annotations

import pytest
import torch

from mlalp_core.attacks import make_attack
from mlalp_core.models.base import MultiLabelClassifier


class _RedMean(MultiLabelClassifier):
    """Label 0's logit is 10 (mean of the red channel - 0.4): on a grey 0.5 image it is hidden
    exactly when the red channel's mean drops by more than 0.1. Label 1 always on."""

    def __init__(self) -> None:
        super().__init__(["red", "always"], (8, 8))
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        r = z[:, 0].flatten(1).mean(1)
        return torch.stack([self.scale * (r - 0.4), torch.full_like(r, 5.0)], 1)


def _attack(name: str, **kw):
    return make_attack(name, _RedMean().eval(), device="cpu", **kw)


def test_the_l2_projection_is_the_euclidean_projection_onto_the_ball():
    pgd = _attack("pgd-l2", eps=1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.full((4, 3, 8, 8), 0.5)
    direction = torch.randn(4, 3, 8, 8, generator=g)
    direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    radius = torch.tensor([0.1, 0.5, 0.9, 2.0])
    eps = torch.tensor([0.5, 0.6, 1.0, 0.5])  # inside, inside, inside, outside; x + d stays in [0,1]
    delta = direction * radius.view(-1, 1, 1, 1)
    out = pgd._project(delta.clone(), eps, x)
    n_in = delta.flatten(1).norm(dim=1)
    for i in range(3):
        assert n_in[i] < eps[i]
        assert torch.allclose(out[i], delta[i], rtol=0, atol=1e-7)  # inside the ball: where it was (to x + d - x)
    # outside: the nearest point of the ball, on the sphere in the same direction
    assert float(out[3].flatten().norm()) == pytest.approx(0.5, rel=1e-5)
    assert torch.allclose(out[3], delta[3] * (0.5 / n_in[3]), rtol=0, atol=1e-7)


def test_the_linf_projection_clips_both_signs_per_coordinate():
    pgd = _attack("pgd", eps=0.1)
    x = torch.full((2, 3, 8, 8), 0.5)
    g = torch.Generator().manual_seed(1)
    delta = (torch.rand(2, 3, 8, 8, generator=g) - 0.5) * 0.6  # entries in (-0.3, 0.3)
    eps = torch.tensor([0.1, 0.05])
    out = pgd._project(delta.clone(), eps, x)
    for i in range(2):
        e = float(eps[i])
        assert torch.allclose(out[i], delta[i].clamp(-e, e), rtol=0, atol=1e-7)
        assert float(out[i].min()) == pytest.approx(-e) and float(out[i].max()) == pytest.approx(e)


def test_both_projections_keep_the_image_in_the_unit_cube():
    x = torch.zeros(1, 3, 8, 8)
    x[0, 0] = 0.97  # near 1: a step up is clipped at 1
    delta = torch.full((1, 3, 8, 8), 0.05)
    delta[0, 1] = -0.05  # channel 1 at 0: a step down is clipped at 0
    for name, eps in (("pgd", 0.1), ("pgd-l2", 100.0)):
        out = _attack(name, eps=eps)._project(delta.clone(), torch.tensor([eps]), x)
        assert float((x + out).min()) >= 0.0 and float((x + out).max()) <= 1.0
        assert torch.allclose(out[0, 0], torch.full((8, 8), 0.03), atol=1e-6)  # up to 1, not beyond
        assert torch.equal(out[0, 1], torch.zeros(8, 8))  # nothing below 0
        assert torch.allclose(out[0, 2], torch.full((8, 8), 0.05))  # free: unchanged


def test_pgd_l2_reports_the_distortion_it_needed_not_its_budget():
    """Steps of eps/4 = 0.75 along the normalised gradient, which lies in the 64 red pixels: each
    step lowers the red mean by 0.75 / 8; hiding needs more than 0.1, so two steps (l_2 = 1.5),
    well inside the budget eps = 3 (a projection onto the sphere would report 3)."""
    x = torch.full((2, 3, 8, 8), 0.5)
    target = torch.tensor([[False, True]] * 2)
    res = _attack("pgd-l2", eps=3.0, random_start=False)(x, target)
    assert bool(res.success.all()) and res.iterations.tolist() == [2, 2]
    l2 = res.perturbation.flatten(1).norm(dim=1)
    assert l2.tolist() == pytest.approx([1.5, 1.5], rel=1e-5)
    assert float(res.perturbation[:, 0].max()) == pytest.approx(-1.5 / 8, rel=1e-5)  # every red pixel, down


def test_linf_attacks_report_the_distortion_they_needed():
    """BIM's steps are eps/8 = 0.0625 at eps 0.5: the red mean must drop by more than 0.1, so it
    stops after two steps, at l_inf 0.125, far inside the budget (every red pixel down)."""
    x = torch.full((1, 3, 8, 8), 0.5)
    target = torch.tensor([[False, True]])
    res = _attack("bim", eps=0.5)(x, target)
    assert bool(res.success.all()) and res.iterations.tolist() == [2]
    assert float(res.perturbation.abs().max()) == pytest.approx(0.125, rel=1e-5)
    assert float(res.perturbation[:, 0].max()) == pytest.approx(-0.125, rel=1e-5)


@pytest.mark.parametrize("name, settings", [
    ("fgsm", dict(eps=0.3)), ("bim", dict(eps=0.3)), ("mi-fgsm", dict(eps=0.3)),
    ("pgd", dict(eps=0.3, restarts=2)), ("pgd-l2", dict(eps=20.0, restarts=2)),
    ("pgd", dict(eps=0.05, min_budget=True, max_eps=0.4, budget_steps=2)),
])
def test_what_the_gradient_attacks_promise_in_the_unit_cube_is_in_it(name, settings):
    """The gradient attacks tell the base class their images are clipped to [0,1] by construction,
    so it skips its range pass (AttackRun.in_unit_cube): their own output, before the base class,
    holds to that on images full of 0s and 1s under budgets that push far past them."""
    from tiny import synthetic_scenes, train_tiny

    model = train_tiny(60).eval()
    x, labels = synthetic_scenes(6, 3)
    x = torch.where(x > 0.5, torch.ones_like(x), torch.zeros_like(x))  # every pixel at an edge of the cube
    target = ~model.predict(x)  # every label flipped: out of reach, so the iterates go far
    attack = make_attack(name, model, device="cpu", **settings)
    run = attack._run(x.clone(), target, None)
    assert run.in_unit_cube
    assert float(run.x_adv.min()) >= 0.0 and float(run.x_adv.max()) <= 1.0
    assert float((run.x_adv - x).abs().max()) > 0  # it moved


@pytest.mark.parametrize("name, settings", [
    ("bim", dict(eps=0.05, step=2.0, iterations=3)), ("pgd", dict(eps=0.05, step=1.5, random_start=False)),
    ("mi-fgsm", dict(eps=0.05, step=2.0)), ("fgsm", dict(eps=0.05)),
    ("bim", dict(eps=0.05, step=2.0, iterations=1)),
])
def test_no_step_leaves_the_budget_not_even_a_first_step_longer_than_eps(name, settings):
    """A step may be up to twice eps (step / eps <= 2): even the first, from the clean image, is
    projected back into the ball, so every returned image lies within eps of its clean image (up
    to the rounding of x +- eps), on images away from the cube's faces where only the ball binds."""
    from tiny import synthetic_scenes, train_tiny

    model = train_tiny(60).eval()
    x, _ = synthetic_scenes(6, 4)
    x = 0.25 + 0.5 * x  # in [0.25, 0.75]: the cube does not bind within 0.2
    target = ~model.predict(x)
    attack = make_attack(name, model, device="cpu", **settings)
    run = attack._run(x.clone(), target, None)
    linf = (run.x_adv - x).flatten(1).abs().amax(1)
    budget = torch.full((len(x),), settings["eps"])
    assert bool((linf <= budget * (1 + 1e-6)).all()), (linf, budget)
    assert bool((linf >= budget * 0.999).any())  # the budget binds somewhere: the projection was needed
    # the same with a budget of its own per example (the minimum-budget search's batches)
    eps = torch.linspace(0.02, 0.07, len(x))
    out = attack._attack_at(x.clone(), target, eps, {"calls": torch.zeros(len(x), dtype=torch.long)}, None, "t")
    linf = (out.x_adv - x).flatten(1).abs().amax(1)
    assert bool((linf <= eps * (1 + 1e-6)).all()) and bool((linf >= eps * 0.999).any()), (linf, eps)
