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
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

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
        Setting("margin", float, 0.0, "kappa of the margin loss (logit units)", "margin kappa", low=0.0, high=100.0),
        Setting("stop_on_success", bool, True, "stop an example at its first iterate that reaches y*",
                "stop on success"),
        Setting("min_budget", bool, False, "search, per example, the smallest eps that reaches y*",
                "minimum-budget search"),
        Setting("max_eps", float, max_eps, "the largest eps the search tries", "largest eps",
                low=0.0, high=max_eps, low_open=True),
        Setting("budget_steps", int, 6, "bisection steps after bracketing (each halves the interval)",
                "bisection steps", low=0, high=30),
    )


class IterativeGradient(Attack):
    """The core; subclasses set ``norm`` ("linf" or "l2"), the schema, and ``_direction``."""

    norm: ClassVar[str] = "linf"
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

    def _start(self, x: torch.Tensor, eps: torch.Tensor, restart: int) -> torch.Tensor:
        """The first delta (zero; PGD draws a random start)."""
        return torch.zeros_like(x)

    def _direction(self, grad: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        """The step's direction from the loss gradient (descent: the step subtracts it)."""
        return grad.sign()

    def _restarts(self) -> int:
        return 1

    # ---- the loop ------------------------------------------------------------------------------
    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B,) the loss toward y*, summed over labels."""
        if self.loss == "margin":
            y = target.to(logits.dtype) * 2 - 1
            return F.relu(self.margin - y * logits).sum(1)
        return per_label_bce(logits, target).sum(1)

    def _project(self, delta: torch.Tensor, eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """delta within the budget and x + delta within [0,1]."""
        e = eps.view(-1, *([1] * (delta.dim() - 1)))
        if self.norm == "linf":
            delta = torch.maximum(torch.minimum(delta, e), -e)
        else:
            n = delta.flatten(1).norm(dim=1).view_as(e).clamp_min(1e-12)
            delta = delta * torch.clamp(e / n, max=1.0)
        return (x + delta).clamp(0.0, 1.0) - x

    def _success(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((probs >= self.threshold) == target.bool()).all(1)

    def _attack_at(self, x: torch.Tensor, target: torch.Tensor, eps: torch.Tensor, stats: dict[str, Any],
                   progress: ProgressFn | None, label: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One fixed-budget attack of the batch at per-example ``eps``: (x_adv, success, steps run)."""
        b = x.shape[0]
        best = x.clone()
        found = torch.zeros(b, dtype=torch.bool, device=x.device)
        ran = torch.zeros(b, dtype=torch.long)
        steps = self._steps()
        for restart in range(self._restarts()):
            active = ~found
            if not bool(active.any()):
                break
            delta = self._project(self._start(x, eps, restart), eps, x)
            state: dict[str, Any] = {}
            for it in range(steps):
                idx = active.nonzero().flatten()
                if idx.numel() == 0:
                    break
                d = delta[idx].requires_grad_(True)
                with torch.enable_grad():
                    logits = self.model(x[idx] + d)
                    loss = self._loss(logits, target[idx])
                    (grad,) = torch.autograd.grad(loss.sum(), d)
                stats["calls"][idx.cpu()] += 2
                ran[idx.cpu()] += 1
                sub = {k: v[idx] for k, v in state.items()}
                step = self._step_size(eps[idx]).view(-1, *([1] * (x.dim() - 1))) * self._direction(grad, sub)
                for k, v in sub.items():
                    if k not in state:
                        state[k] = torch.zeros_like(delta)
                    state[k][idx] = v
                delta[idx] = self._project(d.detach() - step, eps[idx], x[idx])
                with torch.no_grad():
                    probs = torch.sigmoid(self.model(x[idx] + delta[idx]))
                stats["calls"][idx.cpu()] += 1
                ok = self._success(probs, target[idx])
                if self.stop_on_success or it == steps - 1:
                    take = ok & ~found[idx]
                    best[idx[take]] = (x[idx] + delta[idx])[take]
                    found[idx[take]] = True
                if self.stop_on_success:
                    active[idx[ok]] = False
                if not self._report(progress, it + 1, steps, f"{label}: step {it + 1}/{steps}"):
                    return best, found, ran
            # an example that never reached y* returns its last iterate of the last restart
            last = ~found
            best[last] = (x + delta)[last]
        return best, found, ran

    def _run(self, x: torch.Tensor, target: torch.Tensor, progress: ProgressFn | None) -> AttackRun:
        b = x.shape[0]
        stats = {"calls": torch.ones(b, dtype=torch.long)}  # the clean forward
        eps = torch.full((b,), float(self.eps), dtype=x.dtype, device=x.device)
        if not self.min_budget:
            x_adv, ok, ran = self._attack_at(x, target, eps, stats, progress, self.display_name)
            trace = [[{"eps": float(self.eps), "success": bool(ok[i]), "iterations": int(ran[i])}] for i in range(b)]
            return AttackRun(x_adv=x_adv, iterations=ran, model_calls=stats["calls"], trace=trace)
        return self._search(x, target, stats, progress)

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
            x_adv, ok, ran = self._attack_at(x[idx], target[idx], eps[idx], _Sub(stats, idx), None,
                                             self.display_name)
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
        return AttackRun(x_adv=best, iterations=iterations, model_calls=stats["calls"], trace=trace)


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
