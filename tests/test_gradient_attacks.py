"""The field's gradient attacks (FGSM, BIM, PGD, MI-FGSM, PGD-l2), multi-label, their minimum-budget
search, and the objectives beyond the paper's hide-one (hide-all, hide/add a set, show-k,
show-many), through attacks, the runner and Table III."""

from __future__ import annotations

import pytest
import torch

import mlalp_core as ml
from mlalp_core.attacks import ATTACKS, make_attack
from mlalp_core.attacks.targets import build_target, parse_objective, show_k, show_many
from mlalp_core.errors import InvalidInputError
from mlalp_core.experiments.reporting import table3
from mlalp_core.models.base import MultiLabelClassifier

FAMILY = ("fgsm", "bim", "pgd", "mi-fgsm")


class _RedMean(MultiLabelClassifier):
    """Label 0's logit is 10 (mean of the red channel - 0.4): on a grey 0.5 image it is hidden
    exactly when every red pixel drops by more than 0.1, which makes 0.1 the minimal l_inf budget.
    Label 1 is always on, label 2 always off: only the red channel has a gradient."""

    def __init__(self) -> None:
        super().__init__(["red", "always", "never"], (8, 8))
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        r = z[:, 0].flatten(1).mean(1)
        return torch.stack([self.scale * (r - 0.4), torch.full_like(r, 5.0), torch.full_like(r, -5.0)], 1)


@pytest.fixture
def red():
    return _RedMean().eval(), torch.full((2, 3, 8, 8), 0.5), torch.tensor([[False, True, False]] * 2)


@pytest.mark.parametrize("name", FAMILY)
def test_each_linf_attack_finds_the_minimal_budget(red, name):
    model, x, target = red
    res = make_attack(name, model, min_budget=True, budget_steps=8, device="cpu")(x, target)
    assert bool(res.success.all())
    linf = res.perturbation.flatten(1).abs().amax(1)
    budgets = [tr[-1]["budget"] for tr in res.trace]
    for b, li in zip(budgets, linf.tolist()):
        assert 0.1 < b < 0.1 + 0.002, budgets  # bracket 0.031 -> 0.063 -> 0.125, then 8 halvings
        assert li <= b + 1e-6
    # at a budget below 0.1 no attack can succeed, and every one stays inside it
    fixed = make_attack(name, model, eps=0.09, device="cpu")(x, target)
    assert not bool(fixed.success.any())
    assert float(fixed.perturbation.abs().max()) <= 0.09 + 1e-6


def test_pgd_l2_stays_in_its_ball_and_finds_its_budget(red):
    model, x, target = red
    fixed = make_attack("pgd-l2", model, eps=0.5, device="cpu")(x, target)
    assert float(fixed.perturbation.flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5
    # the red channel must fall by 0.1 on average: the l_2 optimum is a uniform 0.1 over 64 pixels
    res = make_attack("pgd-l2", model, min_budget=True, budget_steps=8, random_start=False, device="cpu")(x, target)
    assert bool(res.success.all())
    budgets = [tr[-1]["budget"] for tr in res.trace]
    assert all(0.8 < b <= 0.8 * 1.01 for b in budgets), budgets  # 0.1 x sqrt(64) = 0.8
    # a random start spends part of the ball on noise the gradient never removes: a larger budget
    noisy = make_attack("pgd-l2", model, min_budget=True, budget_steps=8, device="cpu")(x, target)
    assert all(0.8 < tr[-1]["budget"] < 1.0 for tr in noisy.trace)


def test_batching_does_not_change_deterministic_attacks():
    model = ml.load_model("demo-gcn", device="cpu")
    data = ml.load_dataset("demo")
    x = ml.stack_images(data, [2, 3, 4], model.input_size)
    t = ml.hide_one(data.labels()[[2, 3, 4]], example_ids=[2, 3, 4])
    for name in ("bim", "mi-fgsm"):
        batch = make_attack(name, model, min_budget=True)(x, t)
        alone = make_attack(name, model, min_budget=True)(x[1:2], t[1:2])
        assert torch.allclose(batch.x_adv[1], alone.x_adv[0], atol=1e-6)
    pgd = make_attack("pgd", model, seed=3)(x, t)
    again = make_attack("pgd", model, seed=3)(x, t)
    assert torch.equal(pgd.x_adv, again.x_adv)  # seeded random starts: repeatable


def test_margin_loss_and_bad_settings(red):
    model, x, target = red
    res = make_attack("pgd", model, loss="margin", margin=1.0, eps=0.2, device="cpu")(x, target)
    assert bool(res.success.all())
    with pytest.raises(InvalidInputError, match="pgd.eps"):
        make_attack("pgd", model, eps=0)
    with pytest.raises(InvalidInputError, match="fgsm has no setting 'iterations'"):
        make_attack("fgsm", model, iterations=3)
    assert {ATTACKS[a].norm for a in FAMILY} == {"linf"} and ATTACKS["pgd-l2"].norm == "l2"


def test_objectives_build_the_targets_they_say():
    y = torch.tensor([[True, True, False, False, False], [True, False, True, False, False]])
    names = ["a", "b", "c", "d", "e"]
    assert torch.equal(build_target("hide-all", y), torch.zeros_like(y))
    assert torch.equal(build_target("show-many", y), torch.ones_like(y))
    t = build_target("show-k:2", y, seed=1, example_ids=[10, 11])
    assert ((t & ~y).sum(1) == 2).all() and bool((t[y]).all())
    assert torch.equal(t, show_k(y, 2, seed=1, example_ids=[10, 11]))  # seeded per example
    assert build_target("add:d", y, label_names=names)[:, 3].all()
    assert not build_target("hide:a", y, label_names=names)[:, 0].any()
    for bad, words in (("show-k:0", "positive number"), ("show-k", "positive number"), ("hide", "label names"),
                       ("fly", "unknown objective"), ("hide:zz", "unknown label"), ("show-many:3", "no argument")):
        with pytest.raises(InvalidInputError, match=words):
            parse_objective(bad, names)
    with pytest.raises(InvalidInputError, match="already show every label"):
        show_many(torch.ones(1, 3, dtype=torch.bool))


def test_show_many_through_the_runner_and_table_three(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "s.sqlite"
    with pytest.raises(InvalidInputError, match="ml-rank1 cannot pursue the objective show-many"):
        ml.run_benchmark(ml.BenchConfig(models=["demo-gcn"], dataset="demo", attacks=["ml-rank1"], n=2,
                                        device="cpu", store=store, objective="show-many"))
    for objective in ("show-many", "show-k:2"):
        ml.run_benchmark(ml.BenchConfig(models=["demo-gcn"], dataset="demo", attacks=["pgd"], n=3, device="cpu",
                                        store=store, objective=objective,
                                        attack_settings={"pgd": {"min_budget": True, "budget_steps": 3}}))
    from mlalp_core.experiments.store import ResultsStore

    rows = {r["objective"]: r for r in table3(ResultsStore(store).rows())}
    assert set(rows) == {"show-many", "show-k:2"}
    many, two = rows["show-many"], rows["show-k:2"]
    assert many["norm"] == "l_inf" and many["attacked"] == 3
    assert 0 <= many["labels_shown"] <= 8 and many["success_at_1"] >= many["success_at_2"] >= many["success_at_3"]
    assert two["labels_shown"] <= 2 and two["success_rate"] == pytest.approx(two["success_at_2"])


def _textbook(model, x, target, eps, alpha, steps):
    """FGSM / BIM as their papers write them, in plain autograd on the model's forward: the
    gradient of the summed per-label BCE toward y* at the image itself (through the model's
    normalisation), X' = X - alpha sign(grad), then Kurakin et al.'s Clip_{X,eps}{X'} =
    min(1, X + eps, max(0, X - eps, X')). Nothing taken from mlalp's loop."""
    adv = x.clone()
    for _ in range(steps):
        a = adv.clone().requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(a), target.float(), reduction="sum")
        (g,) = torch.autograd.grad(loss, a)
        step = a.detach() - alpha * g.sign()
        adv = torch.minimum(torch.minimum(torch.ones_like(x), x + eps), torch.maximum(torch.maximum(
            torch.zeros_like(x), x - eps), step))
    return adv


@pytest.mark.parametrize("name, steps, alpha", [("fgsm", 1, 1.0), ("bim", 10, 0.125), ("bim", 4, 0.5)])
def test_fgsm_and_bim_are_the_textbook_formulas_bit_for_bit(name, steps, alpha):
    """On the demo model (its normalisation's std below 1, so mlalp takes the sign at the
    normalised image) and without early stop (every image runs every step, as the textbook loop
    does), mlalp's images are those of the formulas above, bit for bit."""
    from pathlib import Path

    if not (Path(__file__).resolve().parents[1] / "assets" / "models" / "demo-gcn.pt").exists():
        pytest.skip("assets/models/demo-gcn.pt is not there")
    from mlalp_core.attacks.targets import hide_one
    from mlalp_core.data.demo import load_gallery
    from mlalp_core.models.demo import load_demo_model

    model = load_demo_model("demo-gcn", device="cpu").eval()
    gallery = load_gallery()
    x = gallery.images(model.input_size)[:8]
    target = hide_one(model.predict(x) | (torch.arange(10) < 2), seed=0)
    eps = 0.03
    settings = {"eps": eps, "stop_on_success": False}
    if name == "bim":
        settings.update(iterations=steps, step=alpha)
    attack = make_attack(name, model, device="cpu", **settings)
    assert attack._gradient_at_normalized()
    ours = attack(x, target).x_adv
    alpha_abs = float(torch.tensor(eps) * alpha)  # the step size as the attack rounds it (float32)
    assert torch.equal(ours, _textbook(model, x, target, eps, alpha_abs, steps))
