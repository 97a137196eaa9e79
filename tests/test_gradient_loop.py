"""The gradient attacks' loop spends one forward and one backward pass per step: iterate t's
success is read from the pass that computes step t+1's gradient. The oracle is the loop as it was
before (an explicit no-grad check after every step, a separate clean pass, a fresh re-check),
kept here as ``_ExplicitCheck``: the same attack run both ways must return the same images,
successes, iterations, traces and probabilities, bit for bit; and the passes are counted on the
model itself, not taken from the attack's own count."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny import OneAtATime, synthetic_scenes, train_tiny

from mlalp_core.attacks import ATTACKS, make_attack
from mlalp_core.attacks.gradient import Fixed
from mlalp_core.attacks.targets import hide_one
from mlalp_core.models.base import MultiLabelClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _ExplicitCheck:
    """The loop before one-pass-per-step (the code of commit 87549f3, its iterates kept as images,
    as the loop keeps them now: an l_inf step projects a - step onto the box [max(x - eps, 0),
    min(x + eps, 1)], an l_2 step x + delta clipped): after each step, a no-grad forward pass on
    the new iterate decides its success."""

    def _attack_at(self, x, target, eps, stats, progress, label, whole=False, first=False, uniform=None) -> Fixed:
        b = x.shape[0]
        best = x.clone()
        found = torch.zeros(b, dtype=torch.bool)
        ran = torch.zeros(b, dtype=torch.long)
        steps = self._steps()
        for restart in range(self._restarts()):
            active = ~found
            if not bool(active.any()):
                break
            start = self._start(x, eps, restart)
            # the iterates: clip(x + projected delta), with their delta taken as iterate - x
            adv = x.clone() if start is None else self._iterate(start, eps, x)
            state: dict[str, Any] = {}
            for it in range(steps):
                idx = active.nonzero().flatten()
                if idx.numel() == 0:
                    break
                a = adv[idx].requires_grad_(True)
                with torch.enable_grad():
                    logits = self.model(a)
                    loss = self._loss(logits, target[idx])
                    (grad,) = torch.autograd.grad(loss.sum(), a)
                ran[idx] += 1
                sub = {k: v[idx] for k, v in state.items()}
                step = self._step_size(eps[idx]).view(-1, *([1] * (x.dim() - 1))) * self._direction(grad, sub)
                for k, v in sub.items():
                    if k not in state:
                        state[k] = torch.zeros_like(adv)
                    state[k][idx] = v
                if self.norm == "linf":  # a - step projected onto [max(x - eps, 0), min(x + eps, 1)]
                    e = eps[idx].view(-1, *([1] * (x.dim() - 1)))
                    lo, hi = (x[idx] - e).clamp(min=0.0), (x[idx] + e).clamp(max=1.0)
                    adv[idx] = torch.minimum(torch.maximum(a.detach() - step, lo), hi)
                else:
                    adv[idx] = self._iterate((a.detach() - x[idx]) - step, eps[idx], x[idx])
                with torch.no_grad():
                    probs = torch.sigmoid(self.model(adv[idx]))
                ok = self._success(probs, target[idx])
                if self.stop_on_success or it == steps - 1:
                    take = ok & ~found[idx]
                    best[idx[take]] = adv[idx][take]
                    found[idx[take]] = True
                if self.stop_on_success:
                    active[idx[ok]] = False
            last = ~found
            best[last] = adv[last]
        return Fixed(best, found, ran, None, None)


def _explicit(name: str, model, **settings):
    cls = ATTACKS[name]
    return type("Explicit" + cls.__name__, (_ExplicitCheck, cls), {})(model, device="cpu", **settings)


class _Counting:
    """Counts the forward passes made on the model (images per pass) and the backward passes
    through it, whoever makes them (the attack, or the base class through model.probabilities).
    On a plain MultiLabelClassifier it counts the calls of ``classify``, which every pass makes
    (a step that takes its gradient at the normalised image calls it without ``forward``); on a
    model with a forward of its own, that forward."""

    def __init__(self, model) -> None:
        self.forwards: list[int] = []
        self.backwards: list[int] = []
        plain = type(model).forward is MultiLabelClassifier.forward
        self.model, self.name = model, "classify" if plain else "forward"
        inner = getattr(model, self.name)

        def counted(x):
            out = inner(x)
            self.forwards.append(int(x.shape[0]))
            if out.requires_grad:
                out.register_hook(lambda g: self.backwards.append(int(g.shape[0])))
            return out
        setattr(model, self.name, counted)

    def clear(self) -> None:
        self.forwards.clear()
        self.backwards.clear()

    def close(self) -> None:
        delattr(self.model, self.name)


def _same(new, old):
    assert torch.equal(new.x_adv, old.x_adv)
    assert torch.equal(new.success, old.success)
    assert torch.equal(new.iterations, old.iterations)
    assert torch.equal(new.probs_clean, old.probs_clean)
    assert torch.equal(new.probs_adv, old.probs_adv)
    drop = ("_s",)
    assert [[{k: v for k, v in s.items() if not k.endswith(drop)} for s in tr] for tr in new.trace] == \
        [[{k: v for k, v in s.items() if not k.endswith(drop)} for s in tr] for tr in old.trace]


@pytest.fixture(scope="module")
def tiny():
    model = train_tiny()
    x, y = synthetic_scenes(64, torch.Generator().manual_seed(1))
    pred = model.predict(x)
    ok = ((pred == y).all(1) & (pred.sum(1) >= 2)).nonzero().flatten()[:8]
    assert len(ok) == 8
    return model, x[ok], hide_one(pred[ok], seed=0)


CASES = [
    ("fgsm", {"eps": 0.1}), ("fgsm", {"eps": 0.3}), ("fgsm", {"min_budget": True, "budget_steps": 3}),
    ("bim", {"eps": 0.1}), ("bim", {"eps": 0.1, "stop_on_success": False}),
    ("bim", {"min_budget": True, "budget_steps": 3}),
    ("pgd", {"eps": 0.1, "restarts": 3}), ("pgd", {"eps": 0.1, "random_start": False}),
    ("pgd", {"eps": 0.09, "restarts": 2, "stop_on_success": False}),
    ("pgd", {"min_budget": True, "budget_steps": 3}),
    ("mi-fgsm", {"eps": 0.1}), ("mi-fgsm", {"eps": 0.1, "loss": "margin", "margin": 1.0}),
    ("pgd-l2", {"eps": 3.0}), ("pgd-l2", {"min_budget": True, "budget_steps": 3}),
]


@pytest.mark.parametrize("name, settings", CASES)
def test_success_from_the_next_pass_equals_an_explicit_check(tiny, name, settings):
    """On a batch-invariant model (every image's bits those of a batch of one: the batches of the
    two loops differ, the examples must not), the whole result is the explicit loop's."""
    model, x, target = tiny
    model = OneAtATime(model).eval()
    new = make_attack(name, model, device="cpu", **settings)(x, target)
    old = _explicit(name, model, **settings)(x, target)
    _same(new, old)
    # the cases reach y* at different iterates, and some miss it, so stopping is exercised
    if not settings.get("min_budget"):
        varied = name == "fgsm" or settings.get("stop_on_success") is False or len(set(new.iterations.tolist())) > 1
        assert 0 < int(new.success.sum()) and varied, new.iterations


def _demo():
    from pathlib import Path

    if not (Path(__file__).resolve().parents[1] / "assets" / "models" / "demo-gcn.pt").exists():
        pytest.skip("assets/models/demo-gcn.pt is not there")
    from mlalp_core.data.demo import load_gallery
    from mlalp_core.models.demo import load_demo_model

    model = load_demo_model("demo-gcn", device="cpu")
    gallery = load_gallery()
    x, y = gallery.images(model.input_size), gallery.labels()
    pred = model.predict(x)
    keep = ((pred == y).all(1) & (y.sum(1) >= 2)).nonzero().flatten()[:6]
    return model, x[keep], hide_one(y[keep], seed=0, example_ids=keep.tolist())


@pytest.mark.parametrize("name, settings", [
    ("fgsm", {"eps": 0.03}), ("bim", {"eps": 0.03}), ("pgd", {"eps": 0.03}),
    ("pgd", {"eps": 0.02, "random_start": False, "stop_on_success": False}), ("mi-fgsm", {"eps": 0.03}),
])
def test_on_the_demo_model_one_at_a_time_and_without_stops(name, settings):
    """On an ordinary model the last bits depend on the batch, so the loops can only agree where
    their batches are the same: one image at a time, or every image to the end (no early stop)."""
    model, x, target = _demo()
    if settings.get("stop_on_success") is False:
        _same(make_attack(name, model, device="cpu", **settings)(x, target),
              _explicit(name, model, **settings)(x, target))
        return
    steps = set()
    for i in range(len(x)):
        new = make_attack(name, model, device="cpu", **settings)(x[i:i + 1], target[i:i + 1])
        _same(new, _explicit(name, model, **settings)(x[i:i + 1], target[i:i + 1]))
        steps.add(int(new.iterations[0]))
    assert name == "fgsm" or len(steps) > 1, steps


def test_the_passes_made_are_the_ones_counted(tiny):
    """One forward and one backward pass per step and one pass for the last iterates, which is
    also the re-check: FGSM makes 2 forward passes and 1 backward in all (the first is the clean
    pass). An example's count is what it needs, the same alone as in a batch."""
    model, x, target = tiny
    counter = _Counting(model)
    try:
        res = make_attack("fgsm", model, eps=0.3, device="cpu")(x, target)
        assert counter.forwards == [8, 8] and counter.backwards == [8]
        assert res.model_calls.tolist() == [3] * 8
        with torch.no_grad():
            assert torch.equal(res.probs_clean, model.probabilities(x))
            assert torch.equal(res.probs_adv, model.probabilities(res.x_adv))

        # BIM one image at a time: reaching y* at iterate k costs k + 1 forward passes and k
        # backward; a miss 11 and 10. When it stops before the last step, its re-check is one more.
        for i in range(8):
            counter.clear()
            res = make_attack("bim", model, eps=0.1, device="cpu")(x[i:i + 1], target[i:i + 1])
            k = int(res.iterations[0])
            stopped = bool(res.success[0]) and k < 10
            assert counter.backwards == [1] * k and int(res.model_calls[0]) == 2 * k + 1
            assert counter.forwards == [1] * (k + 1 + stopped)
        # the same in a batch: a pass per iterate over the running images, then the last pass over all 8
        counter.clear()
        res = make_attack("bim", model, eps=0.1, device="cpu")(x, target)
        its = res.iterations
        assert not bool((res.success & (its < 10)).all())  # someone runs to the end (else no last pass)
        running = [int((its >= t).sum()) for t in range(10)]  # images at iterate t that have not stopped
        assert counter.forwards == running + [8]
        # the backward pass runs on its forward's batch: an image that stops there rides along with a zero
        # gradient (not counted as its call: its count is what it needs, as alone)
        assert counter.backwards == running and any(int((its > t).sum()) < running[t] for t in range(10))
        assert res.model_calls.tolist() == [2 * int(k) + 1 for k in its]

        # PGD from a random start: the clean pass is one of its own
        counter.clear()
        res = make_attack("pgd", model, eps=0.1, device="cpu")(x, target)
        assert res.model_calls.tolist() == [2 * int(k) + 2 for k in res.iterations]
        assert counter.forwards[0] == 8 and len(counter.backwards) == int(res.iterations.max())
    finally:
        counter.close()


def test_a_stop_keeps_the_checked_iterates(tiny):
    """A Stop after step s returns what the explicit loop returned when stopped there: the
    successes among iterates 1..s, the clean image elsewhere."""
    from mlalp_core.attacks import AttackCancelled

    model, x, target = tiny
    model = OneAtATime(model).eval()

    def stop_at(n):
        def progress(done, total, message):
            if done >= n:
                raise AttackCancelled("stop")
        return progress

    full = make_attack("bim", model, eps=0.1, device="cpu")(x, target)
    s = int(full.iterations[full.success].min())  # the first step at which some example succeeds
    res = make_attack("bim", model, eps=0.1, device="cpu")(x, target, progress=stop_at(s))
    assert res.stopped
    first = full.success & (full.iterations == s)
    assert torch.equal(res.success, first)
    assert torch.equal(res.x_adv[first], full.x_adv[first]) and torch.equal(res.x_adv[~first], x[~first])


def test_broken_clean_outputs_stop_the_attack_before_its_first_step(tiny):
    """The clean outputs come from the first pass, so they are checked there, before any backward
    pass: the same one-line error as the base class's check, naming the example."""
    from mlalp_core.errors import InvalidInputError

    inner, x, target = tiny

    class NaNOnSecond(MultiLabelClassifier):
        def __init__(self) -> None:
            super().__init__(inner.label_names, inner.input_size)
            self.inner = inner

        def forward(self, x):
            z = self.inner(x)
            return torch.where(torch.arange(len(x)).view(-1, 1) == 1, float("nan"), z)

    model = NaNOnSecond().eval()
    counter = _Counting(model)
    try:
        for name, settings in (("fgsm", {}), ("bim", {"min_budget": True}), ("pgd", {"random_start": False})):
            counter.clear()
            with pytest.raises(InvalidInputError, match="its output on example s1 is not finite"):
                make_attack(name, model, device="cpu", **settings)(x[:3], target[:3], example_ids=["s0", "s1", "s2"])
            assert counter.forwards == [3] and counter.backwards == []
        counter.clear()  # a random start: the base class checks the clean images itself, first
        with pytest.raises(InvalidInputError, match="its output on example s1 is not finite"):
            make_attack("pgd", model, device="cpu")(x[:3], target[:3], example_ids=["s0", "s1", "s2"])
        assert counter.forwards == [3] and counter.backwards == []
    finally:
        counter.close()


def test_the_sign_steps_take_the_gradient_at_the_normalised_image_where_it_changes_nothing(tiny, monkeypatch):
    """dL/dx = dL/dz / std: with 0 < std <= 1 its sign is that of dL/dz, so the l_inf sign steps
    (FGSM, BIM, PGD) take it at z and skip the normalisation's backward pass. The results are
    those of the gradient at x bit for bit (the explicit loop takes it at x), on the tiny model
    and the demo model, batched and with the budget search; the steps that use more than the
    sign (MI-FGSM's momentum, PGD-l2's norm) and models where forward is not
    classify(normalize(x)), or has hooks, or std > 1, keep the gradient at x."""
    from mlalp_core.attacks.gradient import IterativeGradient

    model, x, target = tiny
    demo = _demo()
    for name, settings in (("fgsm", {"eps": 0.1}), ("bim", {"eps": 0.1}), ("pgd", {"eps": 0.1, "restarts": 2}),
                           ("bim", {"min_budget": True, "budget_steps": 3})):
        assert make_attack(name, model, device="cpu", **settings)._gradient_at_normalized()
        for m, xs, ts in ((model, x, target), demo):
            at_z = make_attack(name, m, device="cpu", **settings)(xs, ts)
            with monkeypatch.context() as mp:
                mp.setattr(IterativeGradient, "_gradient_at_normalized", lambda self: False)
                at_x = make_attack(name, m, device="cpu", **settings)(xs, ts)
            _same(at_z, at_x)
            assert int(at_z.success.sum()) > 0
    # where it does not apply
    assert not make_attack("mi-fgsm", model, device="cpu")._gradient_at_normalized()
    assert not make_attack("pgd-l2", model, device="cpu")._gradient_at_normalized()
    assert not make_attack("fgsm", OneAtATime(model), device="cpu")._gradient_at_normalized()
    for register in (lambda m: m.register_forward_hook(lambda *a: None),
                     lambda m: m.register_forward_pre_hook(lambda *a: None),
                     lambda m: m.register_full_backward_hook(lambda *a: None),
                     lambda m: m.register_full_backward_pre_hook(lambda *a: None),
                     lambda m: torch.nn.modules.module.register_module_forward_hook(lambda *a: None)):
        handle = register(model)  # a hook on the model (or on every module) would be skipped at z
        try:
            assert not make_attack("fgsm", model, device="cpu")._gradient_at_normalized()
        finally:
            handle.remove()
    assert make_attack("fgsm", model, device="cpu")._gradient_at_normalized()

    class OwnNormalize(type(model)):  # another normalisation, or another call: not the plain model
        def normalize(self, x):
            return x

    class OwnCall(type(model)):
        def __call__(self, x):
            return super().__call__(x)

    for kind in (OwnNormalize, OwnCall):
        other = kind()
        other.load_state_dict(model.state_dict())
        assert not make_attack("fgsm", other.eval(), device="cpu")._gradient_at_normalized()
    patched = train_tiny(5)
    patched.forward = lambda x: type(patched).forward(patched, x)  # on the instance
    assert not make_attack("fgsm", patched, device="cpu")._gradient_at_normalized()
    # std in (0, 1] on every channel, checked again when it changes (in place, or a new tensor)
    wide = train_tiny(5)
    attack = make_attack("fgsm", wide, device="cpu")
    assert attack._gradient_at_normalized()
    wide.norm_std[0, 1] = 1.5  # one channel above 1
    assert not attack._gradient_at_normalized()
    wide.norm_std = torch.full_like(wide.norm_std, 0.5)
    assert attack._gradient_at_normalized()
    wide.norm_std = torch.tensor([0.5, 2.0, 0.5]).view(1, 3, 1, 1)
    assert not attack._gradient_at_normalized()
    # and the passes are counted where they are made: one backward pass per step, through classify
    counter = _Counting(model)
    try:
        res = make_attack("fgsm", model, eps=0.3, device="cpu")(x, target)
        assert counter.forwards == [8, 8] and counter.backwards == [8] and res.model_calls.tolist() == [3] * 8
    finally:
        counter.close()
