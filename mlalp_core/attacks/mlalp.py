"""MLA-LP (Zhou et al., IJCNN 2020): multi-label adversarial examples by linear programming.

Distance: l_inf in [0,1] pixel units. Each iteration (the paper's Algorithm 1) linearises the
per-label BCE losses of the target y* around the current image,

    A = d loss(f(x*), y*) / dx   (l x d),   b = loss(t, y*) - loss(f(x*), y*),

and takes the step r of smallest ||r||_inf with A r <= b (eq. (14)), solved exactly by
:func:`mlalp_core.lp.solve_linf`. The per-label target thresholds t start at the model's
threshold (0.5); the authors' margin schedule lowers the threshold of an attacked label by 0.05
(down to 0.1) after a step where its probability did not fall or is now below 0.6, so later LPs
ask for a deeper crossing (mirrored, upwards, for labels to add). An example stops on success,
after ``max_iterations`` (10), when its LP has no optimal solution, or when the attacked labels'
outputs have not moved at all from iteration 5 on. The best iterate (more labels matching y*,
then smaller RMS distortion) is returned.

Beyond the paper: ``box=True`` puts x + r in [0,1] inside the LP (the paper clips afterwards);
the Jacobian of all l losses comes from one vectorised backward per batch; thresholds are
per example. ``authors_exact=True`` reproduces the authors' code, quirks included: losses on
probabilities clamped to [1e-6, 1-1e-6], one margin threshold shared by the whole batch and
lowered by repeated float subtraction (it can reach 0.05), r in [-1,1], and a restart from the
clean image that forgets the best iterate whenever a step leaves fewer labels right than the best.

Example::

    attack = MLALP(model)                         # 10 iterations, exact structured LP
    result = attack(x, hide_one(model.predict(x), seed=0))
    result.success, result.perturbation.abs().amax((1, 2, 3))
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import torch

from ..errors import InvalidInputError
from ..lp import BACKENDS, solve_linf
from .base import Attack, AttackRun, ProgressFn
from .jacobian import batched_jacobian
from .losses import AUTHORS_CLAMP, bce_at_threshold, per_label_bce
from .schema import Schema, Setting

#: The authors' margin schedule.
MARGIN_STEP = 0.05
MARGIN_FLOOR = 0.1
MARGIN_TRIGGER = 0.6
GIVE_UP_FROM = 5


class MLALP(Attack):
    """MLA-LP; see the module docstring. Settings: :data:`MLALP.schema` (the paper's defaults)."""

    name: ClassVar[str] = "mla-lp"
    display_name: ClassVar[str] = "MLA-LP"
    schema: ClassVar[Schema] = Schema("mla-lp", (
        Setting("max_iterations", int, 10, "outer iterations (linearise, solve the LP, step)", "max iterations",
                low=1, high=10_000),
        Setting("lp_backend", str, "auto", "LP solver: auto/structured (exact, fast), highs, mosek (licence)",
                "LP backend", choices=BACKENDS),
        Setting("box", bool, False, "keep x + r in [0,1] inside the LP instead of clipping afterwards",
                "exact [0,1] box inside the LP"),
        Setting("keep_best", bool, True, "return the best iterate seen rather than the last one",
                "return the best iterate"),
        Setting("lp_tol", float, 1e-6, "relative optimality gap at which the LP stops (the linearisation "
                "error is far larger)", "LP relative gap", low=0.0, high=0.5, low_open=True),
        Setting("jacobian", str, "batched", "batched: one vectorised backward; loop: l backward passes",
                "Jacobian", choices=("batched", "loop")),
        Setting("authors_exact", bool, False, "reproduce the authors' code, quirks included",
                "reproduce the authors' code exactly"),
    ))

    def _check_params(self) -> None:
        if self.authors_exact and self.box:
            raise InvalidInputError("mla-lp: box=true is not part of the authors' code: use it without authors_exact")

    # ------------------------------------------------------------------------------------------
    def _run(self, x: torch.Tensor, target: torch.Tensor, progress: ProgressFn | None) -> AttackRun:
        model = self.model
        b, l = target.shape
        d = x[0].numel()
        t0 = self.threshold
        clamp = AUTHORS_CLAMP if self.authors_exact else None
        authors = self.authors_exact
        tgt = target.bool()

        with torch.no_grad():
            probs0 = model.probabilities(x)
        clean_pred = probs0 >= t0
        attacked = clean_pred != tgt  # labels the attack must flip
        hide = attacked & ~tgt  # must go down
        add = attacked & tgt  # must go up

        thresholds = torch.full((b, l), t0, dtype=torch.float64, device=x.device)
        shared_margin = t0  # authors' quirk: one value for the whole batch
        x_cur = x.clone()
        probs_cur = probs0.clone()
        best_x = x.clone()
        best_key = _score(probs0, tgt, t0, torch.zeros(b, device=x.device))
        done = ((probs0 >= t0) == tgt).all(1)
        iterations = torch.zeros(b, dtype=torch.long)
        calls = torch.ones(b, dtype=torch.long)  # the clean forward pass
        elapsed = torch.zeros(b, dtype=torch.float64)
        trace: list[list[dict[str, Any]]] = [[] for _ in range(b)]
        reason = ["already at the target" if bool(done[i]) else "" for i in range(b)]

        for it in range(1, self.max_iterations + 1):
            active = (~done).nonzero().flatten()
            if active.numel() == 0:
                break
            idx = active.tolist()
            probs_prev = probs_cur.clone()
            # ---- the Jacobian of the per-label losses, for all active examples at once ----
            tj = time.perf_counter()
            tgt_a = tgt[active]
            loss1, jac = batched_jacobian(lambda z: per_label_bce(model(z), tgt_a, clamp), x_cur[active],
                                          method=self.jacobian)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            jac_s = (time.perf_counter() - tj) / len(idx)
            thr = thresholds[active] if not authors else _authors_thresholds(hide[active], add[active], t0, shared_margin)
            loss2 = bce_at_threshold(tgt_a, thr, dtype=torch.float64)
            rhs = loss2 - loss1.double()

            step = torch.zeros_like(x_cur[active])
            lp_info = []
            for k, i in enumerate(idx):
                tl = time.perf_counter()
                A = jac[k].reshape(l, d)
                lo = hi = None
                if self.box:
                    lo = -x_cur[i].reshape(-1)
                    hi = 1.0 - x_cur[i].reshape(-1)
                res = solve_linf(A, rhs[k], lo, hi, backend=self.lp_backend, tol=self.lp_tol)
                ok = res.status == "optimal" and (not authors or res.z <= 1.0)
                if ok:
                    step[k] = res.r.reshape(x[i].shape).to(x.dtype)
                lp_s = time.perf_counter() - tl
                lp_info.append((res, ok, lp_s))
                elapsed[i] += jac_s + lp_s

            # ---- take the step, clip, look again ----
            x_new = (x_cur[active] + step).clamp(0.0, 1.0)
            with torch.no_grad():
                probs_new = model.probabilities(x_new)
            for k, i in enumerate(idx):
                res, ok, lp_s = lp_info[k]
                iterations[i] = it
                calls[i] += 2 + l  # forward + l vectorised backward products + forward after the step
                p_old, p_new = probs_cur[i], probs_new[k]
                r_tot = x_new[k] - x[i]
                rms = float(r_tot.double().pow(2).mean().sqrt())
                key = _score(p_new[None], tgt[i][None], t0, torch.tensor([rms], device=x.device))[0]
                entry = {
                    "iteration": it,
                    "lp_status": res.status,
                    "lp_z": float(res.z) if math.isfinite(res.z) else None,
                    "lp_gap": float(res.gap) if res.status == "optimal" else None,
                    "lp_s": lp_s,
                    "jacobian_s": jac_s,
                    "linf": float(r_tot.abs().max()),
                    "l2": float(r_tot.double().pow(2).sum().sqrt()),
                    "labels_wrong": int(((p_new >= t0) != tgt[i]).sum()),
                    "attacked_probs": {model.label_names[j]: float(p_new[j]) for j in attacked[i].nonzero().flatten().tolist()},
                    "margins": {model.label_names[j]: float(thr[k, j]) for j in attacked[i].nonzero().flatten().tolist()},
                }
                if not ok:
                    reason[i] = "LP " + (res.status if res.status != "optimal" else "step beyond [-1,1]")
                    entry["note"] = res.message
                    trace[i].append(entry)
                    done[i] = True
                    continue
                improved = _better(key, best_key[i])
                if improved:
                    best_key[i] = key
                    best_x[i] = x_new[k]
                    x_cur[i] = x_new[k]
                elif authors and key[0] < best_key[i][0]:
                    # authors' quirk: a step with fewer labels right sends the example back to the
                    # clean image and forgets the best iterate
                    x_cur[i] = x[i]
                    best_x[i] = x[i]
                    best_key[i] = _score(probs0[i][None], tgt[i][None], t0, torch.zeros(1, device=x.device))[0]
                    p_new = probs0[i]
                    entry["note"] = "worse step: restarted from the clean image (authors' rule)"
                else:
                    x_cur[i] = x_new[k]
                success = bool(((p_new >= t0) == tgt[i]).all())
                entry["success"] = success
                trace[i].append(entry)
                if success:
                    done[i] = True
                    reason[i] = "success"
                    if not self.keep_best:
                        best_x[i] = x_cur[i]
                    probs_cur[i] = p_new
                    continue
                # ---- margin schedule and give-up rule, per example ----
                moved = bool((p_new[attacked[i]] != p_old[attacked[i]]).any())
                if not moved and it >= GIVE_UP_FROM:
                    done[i] = True
                    reason[i] = "attacked labels did not move"
                if not authors:
                    _lower_margins(thresholds[i], hide[i], add[i], p_old, p_new, t0)
                probs_cur[i] = p_new
                if not self.keep_best:
                    best_x[i] = x_cur[i]
            if authors:
                shared_margin = _authors_shared_margin(shared_margin, hide, add, probs_prev, probs_new, idx)
            if progress is not None:
                progress(it, self.max_iterations, f"MLA-LP iteration {it}: {int((~done).sum())} of {b} still running")
        for i in range(b):
            if trace[i]:
                trace[i][-1]["stop"] = reason[i] or "iteration limit"
        return AttackRun(x_adv=best_x, iterations=iterations, model_calls=calls, trace=trace, elapsed_s=elapsed)


# ---------------------------------------------------------------------------------------------
def _score(probs: torch.Tensor, target: torch.Tensor, t: float, rms: torch.Tensor) -> torch.Tensor:
    """(B, 2): (labels matching y*, -RMS distortion); larger is better, compared lexicographically."""
    match = ((probs >= t) == target).sum(1).double()
    return torch.stack([match, -rms.double()], 1)


def _better(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(a[0] > b[0] or (a[0] == b[0] and a[1] > b[1]))


def _lower_margins(thr: torch.Tensor, hide: torch.Tensor, add: torch.Tensor, p_old: torch.Tensor,
                   p_new: torch.Tensor, t0: float) -> None:
    """Per-example margin schedule, in place: deeper crossings for attacked labels that lag."""
    for j in hide.nonzero().flatten().tolist():
        if (p_new[j] >= p_old[j] or p_new[j] < MARGIN_TRIGGER) and thr[j] > MARGIN_FLOOR + 1e-9:
            thr[j] = max(MARGIN_FLOOR, round(float(thr[j]) - MARGIN_STEP, 10))
    for j in add.nonzero().flatten().tolist():
        if (p_new[j] <= p_old[j] or p_new[j] > 1 - MARGIN_TRIGGER) and thr[j] < 1 - MARGIN_FLOOR - 1e-9:
            thr[j] = min(1 - MARGIN_FLOOR, round(float(thr[j]) + MARGIN_STEP, 10))


def _authors_thresholds(hide: torch.Tensor, add: torch.Tensor, t0: float, margin: float) -> torch.Tensor:
    thr = torch.full(hide.shape, t0, dtype=torch.float64, device=hide.device)
    thr[hide] = margin
    thr[add] = 1.0 - margin
    return thr


def _authors_shared_margin(margin: float, hide, add, probs_old, probs_new, idx: list[int]) -> float:
    """The authors' single threshold: lowered (by float subtraction) if ANY example triggers."""
    trigger = False
    for k, i in enumerate(idx):
        for j in hide[i].nonzero().flatten().tolist():
            if probs_new[k, j] >= probs_old[i, j] or probs_new[k, j] < MARGIN_TRIGGER:
                trigger = True
    if trigger and margin > MARGIN_FLOOR:
        margin = margin - MARGIN_STEP
    return margin
