"""The shared iterative core of the field's gradient attacks (FGSM, BIM, PGD, MI-FGSM, PGD-l2),
made multi-label: each step moves the image against the gradient of a per-label loss toward y*
(summed over labels), within a budget ``eps`` around the clean image, clipped to [0,1].

Per attack only the step differs (:meth:`IterativeGradient._direction`) and the defaults (each
file cites where they come from). Two losses: ``bce``, the per-label binary cross-entropy toward
y* (the loss MLA-LP linearises; the default), and ``margin``, sum_j max(0, kappa - y*_j z_j) on the
logits z (a Carlini-Wagner-style margin per label; kappa = ``margin``).

**Minimum-budget mode** (``min_budget=true``): per example, the smallest eps at which the attack
reaches y*, by bracketing (eps doubles from ``eps`` until it succeeds, up to ``max_eps``) and then
``budget_steps`` bisection steps; batched, each example with its own eps, so examples finish
independently. The returned image is the one found at the smallest successful eps (or, for an
example that never succeeds, the attempt at ``max_eps``). With it, Table III puts these attacks'
l_inf (or l_2) next to MLA-LP's on the same examples.

Every attack stops an example at its first iterate that reaches y* (``stop_on_success``): its
distortion is what it needed, not what the budget allows.

**One forward and one backward pass per step.** Iterate t's success is read from the forward
pass that computes step t+1's gradient; only the last iterate has a pass of its own (no grad), and
with a zero start the first pass is on the clean image, so it gives the clean outputs too. Model
calls per example: 2k + 1 for k steps (FGSM: 3), plus 1 for a separate clean pass after a random
start. The last pass covers every returned image of the batch (the last iterates' and those of
the examples that stopped), so it is the base class's re-check as well; only when every example
stops before the last step is the re-check a pass of its own.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from ..models.base import MultiLabelClassifier
from ..models.outputs import check_outputs
from ..progress import ProgressFn
from .base import Attack, AttackRun
from .losses import per_label_bce
from .schema import Setting

#: The l_inf budget most of the literature uses on [0,1] images (8/255).
EPS_LINF = 8 / 255


def budget_settings(eps: float, max_eps: float, norm: str) -> tuple[Setting, ...]:
    """The settings every fixed-budget attack shares (eps, the loss, minimum-budget search)."""
    unit = "l_inf" if norm == "linf" else "l_2"
    return (
        Setting("eps", float, eps, f"the {unit} budget in [0,1] pixel units (the starting budget of the minimum-"
                "budget search)", "budget eps", low=0.0, high=max_eps, low_open=True),
        Setting("loss", str, "bce", "bce: per-label binary cross-entropy toward y*; margin: per-label margin on "
                "the logits", "loss", choices=("bce", "margin")),
        Setting("margin", float, 0.0, "kappa of the margin loss (logit units)", "margin kappa", low=0.0, high=100.0,
                used_when=("loss", ("margin",))),
        Setting("stop_on_success", bool, True, "stop an example at its first iterate that reaches y*",
                "stop on success"),
        Setting("min_budget", bool, False, "search, per example, the smallest eps that reaches y*",
                "minimum-budget search"),
        Setting("max_eps", float, max_eps, "the largest eps the search tries", "largest eps",
                low=0.0, high=max_eps, low_open=True, used_when=("min_budget", (True,))),
        Setting("budget_steps", int, 6, "bisection steps after bracketing (each halves the interval)",
                "bisection steps", low=0, high=30, used_when=("min_budget", (True,))),
    )


class IterativeGradient(Attack):
    """The core; subclasses set ``norm`` ("linf" or "l2"), the schema, and ``_direction``."""

    norm: ClassVar[str] = "linf"
    #: 2: the iterates are clip(x + delta) (revision 1 returned x + (clip(x + delta) - x), which can
    #: differ from it in the last bit)
    arithmetic: ClassVar[int] = 2
    # settings every subclass has (checked against its schema at import)
    eps: float
    loss: str
    margin: float
    stop_on_success: bool
    min_budget: bool
    max_eps: float
    budget_steps: int

    # ---- what an attack changes ------------------------------------------------------------------
    def _steps(self) -> int:
        return int(self.settings.get("iterations", 1))

    def _step_size(self, eps: torch.Tensor) -> torch.Tensor:
        return eps * float(self.settings.get("step", 1.0))

    def _start(self, x: torch.Tensor, eps: torch.Tensor, restart: int) -> torch.Tensor | None:
        """The first delta; None: zero (PGD draws a random start)."""
        return None

    def _direction(self, grad: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        """The step's direction from the loss gradient (descent: the step subtracts it). ``grad``
        is the loop's own tensor: a direction may be computed in its memory (the loop then
        scales it in place too)."""
        return grad.sign_()

    def _restarts(self) -> int:
        return 1

    def _zero_start(self) -> bool:
        """Whether :meth:`_start` returns None (a zero delta) for every restart."""
        return True

    def _outputs_from_forward(self) -> bool:
        """The model's forward pass gives its network outputs and its probabilities are their
        sigmoid (a logits model that redefines none of these): a pass of the loop can then stand
        for one of the base class's (the clean check, the re-check)."""
        kind = type(self.model)
        return getattr(self.model, "output_kind", "logits") == "logits" and all(
            getattr(kind, f) is getattr(MultiLabelClassifier, f)
            for f in ("probabilities", "network_outputs", "probabilities_from_outputs"))

    def _checks_clean_outputs(self) -> bool:
        return self._zero_start() and self._outputs_from_forward()

    def _gradient_at_normalized(self) -> bool:
        """Whether a step may take its gradient at the normalised image z = (x - mean) / std, not
        at x. dL/dx = (dL/dz) / std elementwise, and with 0 < std <= 1 the division never turns a
        nonzero into zero (nor changes a sign, an inf or a NaN): a step that uses only the sign of
        the gradient (the sign step of FGSM, BIM, PGD) is the same bit for bit, and the normalisation's
        backward pass is not made (~2 % of an F+B pass on the demo models, bench/peers.py).
        Only for a plain :class:`MultiLabelClassifier`: forward = classify(normalize(x)), neither
        redefined (on the class or the instance), no hook on the model (they would be skipped)."""
        model = self.model
        if type(self)._direction is not IterativeGradient._direction:  # the sign (of any norm's step)
            return False
        kind = type(model)
        if not isinstance(model, MultiLabelClassifier) or any(
                getattr(kind, f) is not getattr(MultiLabelClassifier, f) or f in vars(model)
                for f in ("forward", "normalize", "__call__")):
            return False
        hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        if any(getattr(model, h, None) for h in hooks) or any(
                getattr(torch.nn.modules.module, "_global" + h, None) for h in hooks):
            return False
        std = model.norm_std
        held = getattr(self, "_std_checked", None)  # (the tensor itself, its version, the answer)
        if held is None or held[0] is not std or held[1] != std._version:  # (four small ops: once per std)
            held = self._std_checked = (std, std._version, bool(((std > 0) & (std <= 1)).all()))
        return held[2]

    # ---- the loop ------------------------------------------------------------------------------
    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B,) the loss toward y*, summed over labels."""
        if self.loss == "margin":
            y = target.to(logits.dtype) * 2 - 1
            return F.relu(self.margin - y * logits).sum(1)
        return per_label_bce(logits, target).sum(1)

    def _project(self, delta: torch.Tensor, eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """delta within the budget and x + delta within [0,1] (the iterate of :meth:`_iterate`, less x)."""
        return self._iterate(delta, eps, x).sub_(x)

    def _iterate(self, delta: torch.Tensor, eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The iterate x + delta with delta projected onto the budget and the image clipped to
        [0,1]; computed in ``delta``'s memory (the caller's own tensor). The random starts and
        the l_2 steps (the l_inf steps clamp onto a box of their own, :meth:`_step`)."""
        e = eps.view(-1, *([1] * (delta.dim() - 1)))
        if self.norm == "linf":
            delta = delta.clamp_(min=-e, max=e)
        else:
            n = delta.flatten(1).norm(dim=1).view_as(e).clamp_min(1e-12)
            delta = delta.mul_(torch.clamp(e / n, max=1.0))
        return delta.add_(x).clamp_(0.0, 1.0)

    def _success(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((probs >= self.threshold) == target.bool()).all(1)

    def _attack_at(self, x: torch.Tensor, target: torch.Tensor, eps: torch.Tensor, stats: dict[str, Any],
                   progress: ProgressFn | None, label: str, whole: bool = False, first: bool = False,
                   uniform: float | None = None) -> Fixed:
        """One fixed-budget attack of the batch at per-example ``eps``.

        One forward pass per iterate: the pass at iterate t gives the gradient of step t+1 and
        iterate t's success, so an example that reaches y* at t returns t without a pass of its
        own; only the last iterate (or the one a Stop leaves) needs a no-grad pass. The start
        (iterate 0) is never returned. An example that stops is carried through the backward pass
        of its batch with a zero gradient (batched kernels cannot skip a row); its count of model
        calls is what it needs, the same alone or in any batch. The running images have tensors
        of their own, compacted when some stop (not gathered at every step). ``whole``: ``x`` is
        the batch the base class re-checks, so the last pass covers every returned image and is
        that re-check. ``first``: ``x`` is the base class's batch, attacked first: the first pass
        checks the clean outputs when the base class left that to it. ``uniform``: every eps is
        this value (else found out here)."""
        b = x.shape[0]
        best: torch.Tensor | None = None  # the returned images, once one is known (the clean image elsewhere)
        found = torch.zeros(b, dtype=torch.bool, device=x.device)
        ran = torch.zeros(b, dtype=torch.long)
        calls = stats["calls"]
        steps = self._steps()
        clean: torch.Tensor | None = None
        checked: tuple[torch.Tensor, torch.Tensor] | None = None
        reuse = self._outputs_from_forward()
        at_z = self._gradient_at_normalized()
        restarts = self._restarts()
        shape = (-1,) + (1,) * (x.dim() - 1)
        same = uniform if uniform is not None else (  # one budget for the batch
            float(eps[0]) if b and bool((eps == eps[0]).all()) else None)
        size_same = float(self._step_size(eps[:1])[0]) if same is not None else None
        for restart in range(restarts):
            if bool(found.all()):
                break
            start = self._start(x, eps, restart)
            # ar None: a zero delta (x + 0 is x, and x is in [0,1]: the projection of 0 is 0)
            adv = None if start is None else self._iterate(start, eps, x)
            # the running examples: their batch rows, clean images, iterates, targets, budgets and step state
            if bool(found.any()):
                rows = (~found).nonzero().flatten()
                xr, tr, er = x[rows], target[rows], eps[rows]
                ar = None if adv is None else adv[rows]
            else:
                rows = torch.arange(b, device=x.device)
                xr, ar, tr, er = x, adv, target, eps
            zero = ar is None
            rows_cpu = rows.cpu()
            state: dict[str, Any] = {}
            stopped = False
            for it in range(steps + 1):
                n = rows.numel()
                if n == 0:
                    break
                last = it == steps or stopped
                # a Stop checks the iterate it leaves when successes are taken as they come (or it was the last)
                check = it > 0 and (self.stop_on_success or it == steps)
                if last and not check:
                    break
                if last and whole and reuse and not stopped and restart == restarts - 1:
                    # one pass on every returned image: the last iterates' check, and for the
                    # others (already final) the base class's re-check, which reuses it
                    images = xr if ar is None else ar
                    if n < b:  # some stopped, so best holds their images
                        assert best is not None
                        images, running = best.clone(), images
                        images[rows] = running
                    with torch.no_grad():
                        outputs = self.model.network_outputs(images)
                    every = self.model.probabilities_from_outputs(outputs)
                    checked = (images, outputs)
                    probs = every if n == b else every[rows]
                    inputs = images if n == b else images[rows]
                elif last:
                    inputs = xr if ar is None else ar
                    with torch.no_grad():
                        probs = torch.sigmoid(self.model(inputs))
                else:
                    # the gradient with respect to the iterate is the one with respect to its delta
                    inputs = xr if ar is None else ar
                    if at_z:  # its sign, at the normalised image (_gradient_at_normalized)
                        with torch.no_grad():
                            d = self.model.normalize(inputs)
                        d.requires_grad_(True)
                        with torch.enable_grad():
                            logits = self.model.classify(d)
                    else:
                        d = inputs.detach().requires_grad_(True)
                        with torch.enable_grad():
                            logits = self.model(d)
                    probs = torch.sigmoid(logits.detach())
                _count(calls, rows_cpu, b)
                if restart == 0 and it == 0 and n == b and reuse and zero:
                    # the pass on x itself, the whole batch: the clean outputs, checked before any step
                    # when the base class left that to this pass
                    if first and self._checks_clean_outputs():
                        check_outputs(self.model, logits.detach(), self._images)
                    clean = probs
                keep: torch.Tensor | None = None
                if check:
                    ok = self._success(probs, tr)
                    if bool(ok.any()):
                        if not (last and n == b and not stopped):  # (else all return these inputs: below)
                            if best is None:
                                best = x.clone()
                            best[rows[ok]] = inputs[ok]
                        found[rows[ok]] = True
                        if self.stop_on_success:
                            keep = ~ok
                if last:
                    break
                if keep is not None:  # some stopped: the running tensors lose their rows
                    rows, rows_cpu = rows[keep], rows_cpu[keep.cpu()]
                    if rows.numel() == 0:
                        continue
                    xr, er = xr[keep], er[keep]
                    ar = None if ar is None else ar[keep]
                    state = {k: v[keep] for k, v in state.items()}
                    logits, tr = logits[keep], tr[keep]
                with torch.enable_grad():
                    (grad,) = torch.autograd.grad(self._loss(logits, tr).sum(), d)
                if keep is not None:
                    grad = grad[keep]
                _count(calls, rows_cpu, b)
                _count(ran, rows_cpu, b)
                ar = self._step(ar, xr, er, grad, state, same, size_same, shape)
                if not self._report(progress, it + 1, steps, f"{label}: step {it + 1}/{steps}"):
                    stopped = True
            if stopped:
                return Fixed(x.clone() if best is None else best, found, ran, clean, None)
            # an example that never reached y* returns its last iterate of the last restart: the
            # inputs of the last pass (the loop ends on it unless every image has stopped)
            if rows.numel() == b:  # none stopped early: every image returns its last iterate
                best = inputs
            else:
                never = ~found[rows]
                if bool(never.any()):
                    assert best is not None  # some stopped
                    best[rows[never]] = inputs[never]
        return Fixed(x.clone() if best is None else best, found, ran, clean, checked)

    def _step(self, ar: torch.Tensor | None, xr: torch.Tensor, er: torch.Tensor, grad: torch.Tensor,
              state: dict[str, Any], same: float | None, size_same: float | None,
              shape: tuple[int, ...]) -> torch.Tensor:
        """The next iterates from the current ones (``ar``; None: the clean images ``xr``) and the
        loss gradient there. l_inf: a - size * sign, projected onto the intersection of the
        budget and the unit cube, the box [max(x - eps, 0), min(x + eps, 1)] (projecting onto the
        ball and then onto the cube is the same clamp); the box's bounds are computed once per
        run, at its first step that can leave the ball (kept in ``state``, compacted with it). Three
        elementwise passes over the images a step (the sign, a - size * sign in one rounding,
        the clamp; size * sign is exact), where a step kept as a delta took 8. l_2: delta - size *
        direction, projected (:meth:`_iterate`). No element's value depends on its place in the
        batch."""
        direction = self._direction(grad, state)
        src = xr if ar is None else ar
        if self.norm != "linf":
            size = self._step_size(er).view(shape) if size_same is None else size_same
            delta = direction.mul_(size)
            delta = delta.neg_() if ar is None else (ar - xr).sub_(delta)
            return self._iterate(delta, er, xr)
        if size_same is not None:
            new = torch.add(src, direction, alpha=-size_same, out=direction)
            inside = ar is None and same is not None and size_same <= same
        else:
            size = self._step_size(er)
            new = torch.addcmul(src, direction, size.view(shape), value=-1, out=direction)
            inside = ar is None and bool((size <= er).all())
        if inside:  # a first step from x no longer than eps: only the cube can bind
            return new.clamp_(0.0, 1.0)
        if "box_lo" not in state:
            e: float | torch.Tensor = same if same is not None else er.view(shape)
            state["box_lo"], state["box_hi"] = (xr - e).clamp_(min=0.0), (xr + e).clamp_(max=1.0)
        return new.clamp_(min=state["box_lo"], max=state["box_hi"])

    def _run(self, x: torch.Tensor, target: torch.Tensor, progress: ProgressFn | None) -> AttackRun:
        b = x.shape[0]
        stats = {"calls": torch.zeros(b, dtype=torch.long)}
        eps = torch.full((b,), float(self.eps), dtype=x.dtype, device=x.device)
        if self.min_budget:
            run = self._search(x, target, stats, progress)
        else:
            out = self._attack_at(x, target, eps, stats, progress, self.display_name, whole=True, first=True,
                                  uniform=float(eps[0]))
            trace = [[{"eps": float(self.eps), "success": ok, "iterations": ran}]
                     for ok, ran in zip(out.success.tolist(), out.ran.tolist())]
            run = AttackRun(x_adv=out.x_adv, iterations=out.ran, model_calls=stats["calls"], trace=trace,
                            probs_clean=out.clean, checked=out.checked, in_unit_cube=True)
        if run.probs_clean is None:
            stats["calls"] += 1  # the clean forward pass the base class makes
        return run

    def _search(self, x: torch.Tensor, target: torch.Tensor, stats: dict[str, Any],
                progress: ProgressFn | None) -> AttackRun:
        """Bracketing, then bisection, per example at once (see the module docstring)."""
        b, dev = x.shape[0], x.device
        lo = torch.zeros(b, dtype=x.dtype, device=dev)  # largest eps known to fail
        hi = torch.full((b,), math.inf, dtype=x.dtype, device=dev)  # smallest eps known to succeed
        eps = torch.full((b,), float(self.eps), dtype=x.dtype, device=dev)
        best = x.clone()
        iterations = torch.zeros(b, dtype=torch.long)
        trace: list[list[dict[str, Any]]] = [[] for _ in range(b)]
        clean: torch.Tensor | None = None
        bracket_rounds = max(1, math.ceil(math.log2(self.max_eps / self.eps)) + 1) if self.max_eps > self.eps else 1
        rounds = bracket_rounds + self.budget_steps
        for r in range(rounds):
            todo = torch.isinf(hi) & (lo < self.max_eps) if r < bracket_rounds else torch.isfinite(hi)
            if r == bracket_rounds:  # the bisection starts from each example's bracket
                eps = torch.where(torch.isfinite(hi), (lo + hi) / 2, eps)
            idx = todo.nonzero().flatten()
            if idx.numel() == 0:
                if r < bracket_rounds:
                    continue
                break
            out = self._attack_at(x[idx], target[idx], eps[idx], _Sub(stats, idx), None, self.display_name,
                                  first=r == 0 and idx.numel() == b)
            x_adv, ok, ran = out.x_adv, out.success, out.ran
            if r == 0 and idx.numel() == b:
                clean = out.clean
            iterations[idx.cpu()] += ran
            for k, i in enumerate(idx.tolist()):
                trace[i].append({"round": r, "eps": float(eps[i]), "success": bool(ok[k]), "iterations": int(ran[k]),
                                 "phase": "bracket" if r < bracket_rounds else "bisect"})
            succ = idx[ok]
            fail = idx[~ok]
            best[succ] = x_adv[ok]
            hi[succ] = torch.minimum(hi[succ], eps[succ])
            lo[fail] = torch.maximum(lo[fail], eps[fail])
            never = fail[torch.isinf(hi[fail])]
            best[never] = x_adv[~ok][torch.isinf(hi[fail])]  # the latest (largest-budget) attempt so far
            if r < bracket_rounds - 1:
                eps = torch.where(torch.isinf(hi), torch.clamp(eps * 2, max=self.max_eps), eps)
            else:
                eps = torch.where(torch.isfinite(hi), (lo + hi) / 2, eps)
            if not self._report(progress, r + 1, rounds, f"{self.display_name}: budget search round {r + 1}/{rounds}"):
                break
        for i in range(b):
            if trace[i]:
                trace[i][-1]["budget"] = float(hi[i]) if math.isfinite(float(hi[i])) else None
        return AttackRun(x_adv=best, iterations=iterations, model_calls=stats["calls"], trace=trace,
                         probs_clean=clean, in_unit_cube=True)


class Fixed(NamedTuple):
    """One fixed-budget attack of a batch (:meth:`IterativeGradient._attack_at`)."""

    x_adv: torch.Tensor
    success: torch.Tensor  # (B,) bool, as the attack's own forward passes saw it
    ran: torch.Tensor  # (B,) long: gradient steps
    clean: torch.Tensor | None  # (B, l) outputs on x from the first pass (a zero start), else None
    checked: tuple[torch.Tensor, torch.Tensor] | None  # the last iterates' no-grad pass, when on the whole batch


def _count(counts: Any, rows: torch.Tensor, b: int) -> None:
    """One more for the running rows (all ``b`` rows of a plain tensor: one op, not an index)."""
    if rows.numel() == b and isinstance(counts, torch.Tensor):
        counts.add_(1)
    else:
        counts[rows] += 1


class _Sub(dict):
    """The call counter of a sub-batch, written through to the batch's."""

    def __init__(self, stats: dict[str, Any], idx: torch.Tensor) -> None:
        super().__init__(calls=_Counter(stats["calls"], idx.cpu()))


class _Counter:
    def __init__(self, counts: torch.Tensor, idx: torch.Tensor) -> None:
        self.counts, self.idx = counts, idx

    def __getitem__(self, sub: torch.Tensor) -> torch.Tensor:
        return self.counts[self.idx[sub]]

    def __setitem__(self, sub: torch.Tensor, value: torch.Tensor) -> None:
        self.counts[self.idx[sub]] = value
