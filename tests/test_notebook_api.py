"""The three-line notebook API and ``wrap``: any nn.Module as a model that attacks, the batch
runner and the app accept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import mlalp_core as ml
from mlalp_core.errors import ConfigurationError, InvalidInputError

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_fast_and_loads_nothing_heavy():
    code = ("import sys, time; t = time.perf_counter(); import mlalp_core; dt = time.perf_counter() - t; "
            "print(dt, 'torch' in sys.modules, 'streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["False", "False"]
    assert float(out[0]) < 0.5


def test_three_lines_attack_a_gallery_batch_as_defined():
    """The three lines against the paper's definitions computed here: hide-one flips one positive
    label per example; MLA-LP's first LP (A = d BCE_j / dx, b = loss(t) - loss = log 2 - BCE_j,
    min ||r||_inf s.t. A r <= b) has the optimum an independent solver (Clarabel, through cvxpy)
    finds on a Jacobian taken here label by label; success re-checks with a fresh forward pass."""
    import math

    import cvxpy as cp
    import torch.nn.functional as F

    model = ml.load_model("demo-gcn", device="cpu")
    data = ml.load_dataset("demo")
    images = ml.stack_images(data, range(4), model.input_size)
    labels = data.labels()[:4]
    target = ml.hide_one(labels)
    result = ml.attack("mla-lp", model, images, target, max_iterations=1)
    assert ((labels.bool() & ~target).sum(1) == 1).all() and not (target & ~labels.bool()).any()
    assert torch.equal(result.success, (model.predict(result.x_adv) == target).all(1))
    for p in model.parameters():
        p.requires_grad_(False)
    for i in range(2):
        x = images[i:i + 1].clone().requires_grad_(True)
        loss = F.binary_cross_entropy_with_logits(model(x)[0], target[i].float(), reduction="none")
        A = torch.stack([torch.autograd.grad(loss[j], x, retain_graph=True)[0].flatten()
                         for j in range(loss.numel())]).double().numpy()
        b = (math.log(2) - loss.detach().double()).numpy()
        r, z = cp.Variable(A.shape[1]), cp.Variable()
        problem = cp.Problem(cp.Minimize(z), [A @ r <= b, r <= z, -r <= z])
        problem.solve(solver=cp.CLARABEL)
        assert problem.status == "optimal"
        assert result.trace[i][0]["lp_z"] == pytest.approx(float(z.value), rel=1e-6)
        # one step of at most that size (clipped to [0,1]), or the clean image if it was no better
        assert float((result.x_adv[i] - images[i]).abs().max()) <= float(z.value) * (1 + 1e-5)
    assert {"load_model", "attack", "wrap", "hide_one"} <= set(dir(ml))
    with pytest.raises(AttributeError):
        ml.no_such_thing  # noqa: B018


class _Raw(nn.Module):
    """A plain network on [0,1] pixels: the demo model's computation, without the mlalp class."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_a_wrapped_module_is_attacked_exactly_like_the_model_it_computes():
    demo = ml.load_model("demo-gcn", device="cpu")
    wrapped = ml.wrap(_Raw(demo), labels=list(demo.label_names), input_size=96, name="raw-demo")
    data = ml.load_dataset("demo")
    x = ml.stack_images(data, range(6), (96, 96))
    target = ml.hide_one(data.labels()[:6], seed=1)
    a = ml.attack("mla-lp", wrapped, x, target)
    b = ml.attack("mla-lp", demo, x, target)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-6) and torch.equal(a.success, b.success)
    assert a.success.float().mean() >= 0.5
    # probabilities instead of logits, and a normalisation applied inside
    probs = ml.wrap(nn.Sequential(_Raw(demo), nn.Sigmoid()), labels=list(demo.label_names), input_size=(96, 96),
                    output="probabilities")
    assert torch.allclose(probs.probabilities(x), demo.probabilities(x), atol=1e-5)
    norm = ml.wrap(_Raw(demo), labels=list(demo.label_names), input_size=96, mean=(0.5, 0.5, 0.5),
                   std=(0.25, 0.25, 0.25))
    assert torch.allclose(norm(x), demo((x - 0.5) / 0.25), atol=1e-5)


@pytest.mark.parametrize("kwargs, words", [
    (dict(labels=["a", "b", "c"]), "returned (1, 10), expected (1, 3)"),
    (dict(labels="abc"), "labels must be a list"),
    (dict(labels=[str(i) for i in range(10)], mean=(0.5, 0.5, 0.5)), "give both mean and std"),
    (dict(labels=[str(i) for i in range(10)], input_size=3), "input_size"),
    (dict(labels=[str(i) for i in range(10)], output="scores"), "output must be"),
])
def test_wrap_refuses_what_cannot_work_with_one_line(kwargs, words):
    demo = ml.load_model("demo-gcn", device="cpu")
    args = dict(input_size=96)
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ml.wrap(_Raw(demo), **args)


def test_a_registered_model_runs_in_the_batch_runner_and_appears_in_the_app(tmp_path, monkeypatch):
    from mlalp_core.experiments.store import ResultsStore
    from mlalp_core.models import registry

    monkeypatch.setattr(registry, "_REGISTERED", {})
    monkeypatch.chdir(tmp_path)
    demo = ml.load_model("demo-liw", device="cpu")
    with pytest.raises(ConfigurationError, match="built-in"):
        ml.register(ml.wrap(_Raw(demo), labels=list(demo.label_names), input_size=96), "demo-gcn")
    name = ml.register(ml.wrap(_Raw(demo), labels=list(demo.label_names), input_size=96), "my-net")
    assert ml.load_model("my-net", device="cpu").registry_name == "my-net"
    store = tmp_path / "s.sqlite"
    ml.run_benchmark(ml.BenchConfig(models=[name], dataset="demo", attacks=["mla-lp"], n=2, device="cpu",
                                    store=store, attack_settings={"mla-lp": {"max_iterations": 3}}))
    rows = ResultsStore(store).rows()
    assert len(rows) == 2 and {r["model"] for r in rows} == {"my-net"}

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MLALP_DEVICE", "cpu")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    assert not at.exception
    assert "my-net" in at.sidebar.selectbox(key="g_model").options
