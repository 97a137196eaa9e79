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
outputs have not moved at all in a step, from the 6th step on. The best iterate (more labels
matching y*, then smaller RMS distortion) is returned.

Beyond the paper: ``box=True`` puts x + r in [0,1] inside the LP (the paper clips afterwards);
the Jacobian of all l losses comes from one vectorised backward per batch; thresholds are
per example. ``mode="authors"`` reproduces the authors' code, quirks included (the README's
table lists each behaviour; ``tests/authors_oracle.py`` transcribes their loop): losses on
probabilities clamped to [1e-6, 1-1e-6]; r in [-1,1]; all-zero rows of A dropped before the LP;
the give-up check on the step's own output against the (clamped) output where the Jacobian was
taken, before the best-iterate update; a restart from the clean image that forgets the best
iterate whenever a step leaves fewer labels right; and one margin threshold shared by the whole
batch, lowered by 0.05 for each triggering example in batch order while above 0.1 (float
subtraction: it reaches 0.05). Which examples trigger follows their code: "did not fall" is
against the output after the example's previous step, which a restart does not reset (so a
restarted example that repeats its step triggers), and an example that reaches y* in a step
still counts in that step (their success is recorded at the top of the next iteration).

Labels to add, in the authors' mode: their trigger and threshold were written for the label to
hide (the paper only hides, one label per example). Taken literally on a label to add, a lower
threshold would ask for a shallower crossing and "did not fall" would fire on progress, so the
mode mirrors both, as the default mode does: such a label's target is 1 - margin, and it lags
when its output did not rise or is above 0.4. An example with several attacked labels lowers
the shared margin once if any of them lags. This is our extension, not their code.

Example::

    attack = MLALP(model)                         # 10 iterations, exact structured LP
    result = attack(x, hide_one(model.predict(x), seed=0))
    result.success, result.perturbation.abs().amax((1, 2, 3))
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..device import lp_batched
from ..lp import BACKENDS, solve_linf, solve_linf_batch
from .base import Attack, AttackRun, ProgressFn
from .jacobian import batched_jacobian
from .losses import AUTHORS_CLAMP, bce_at_threshold, per_label_bce
from .polish import POLISHES, polish_pgd, polish_scale
from .schema import Schema, Setting

#: The authors' margin schedule.
MARGIN_STEP = 0.05
MARGIN_FLOOR = 0.1
MARGIN_TRIGGER = 0.6
#: The give-up rule is checked from this step on (1-based; the authors' 0-based index 5).
GIVE_UP_FROM = 6


class MLALP(Attack):
    """MLA-LP; see the module docstring. Settings: :data:`MLALP.schema` (the paper's defaults)."""

    name: ClassVar[str] = "mla-lp"
    display_name: ClassVar[str] = "MLA-LP"
    norm: ClassVar[str] = "linf"
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
        Setting("mode", str, "mlalp", "mlalp: per-example margins, the best iterate kept, exact LPs; authors: "
                "the authors' code, quirks included (README: the authors' mode)", "behaviour",
                choices=("mlalp", "authors")),
        Setting("polish", str, "none", "MLA-LP+: after a success, make the perturbation smaller while it still "
                "reaches y*: none (the paper), scale (bisection along it), pgd (a PGD shrink warm-started from it)",
                "polish (MLA-LP+)", choices=POLISHES),
        Setting("polish_factor", float, 0.97, "pgd polish: each round's l_inf budget, as a fraction of the current "
                "l_inf", "polish budget factor", low=0.0, high=1.0, low_open=True, high_open=True, from_paper=False,
                used_when=("polish", ("pgd",))),
        Setting("polish_steps", int, 12, "pgd polish: signed-gradient steps per round; scale polish: bisection "
                "steps", "polish steps", low=1, high=10_000, from_paper=False, used_when=("polish", ("pgd", "scale"))),
        Setting("polish_step", float, 0.1, "pgd polish: step size as a fraction of the round's budget",
                "polish step", low=0.0, high=1.0, low_open=True, from_paper=False, used_when=("polish", ("pgd",))),
        Setting("polish_rounds", int, 100, "pgd polish: rounds at most (each ends at the first iterate that "
                "reaches y*; the polish stops at the first round that reaches nothing)", "polish rounds",
                low=1, high=100_000, from_paper=False, used_when=("polish", ("pgd",))),
    ))

    # the settings as attributes, for type checkers (checked against the schema at import)
    max_iterations: int
    lp_backend: str
    box: bool
    keep_best: bool
    lp_tol: float
    jacobian: str
    mode: str
    polish: str
    polish_factor: float
    polish_steps: int
    polish_step: float
    polish_rounds: int

    #: no box in the LP; their own iterate rule (restart on a worse step) in place of keep_best
    authors_fixes: ClassVar[dict[str, Any]] = {"box": False, "keep_best": True}
    authors_batch: ClassVar[int | None] = 10  # their MLA-LP batches (the margin is shared by the batch)

    @classmethod
    def run_name(cls, settings: dict[str, Any]) -> tuple[str, set[str]]:
        """A polished run is MLA-LP+ (the pgd polish; "MLA-LP+ (scale)" for the other one)."""
        polish = settings.get("polish", "none")
        if polish == "none":
            return cls.display_name, set()
        return ("MLA-LP+" if polish == "pgd" else f"MLA-LP+ ({polish})"), {"polish"}

    @property
    def authors(self) -> bool:
        """The authors' mode (their code's behaviour, quirks included)."""
        return self.mode == "authors"

    # ---- the loop (Algorithm 1), one named step per line ----------------------------------------
    def _run(self, x: torch.Tensor, target: torch.Tensor, progress: ProgressFn | None) -> AttackRun:
        st = self._start(x, target)
        for it in range(1, self.max_iterations + 1):
            active = (~st.done).nonzero().flatten()
            if active.numel() == 0:
                break
            rhs, jac, thr, jac_s = self._linearise(st, active)
            steps, lp_info = self._solve(st, active, jac, rhs, jac_s)
            x_new, probs_new = self._step(st, active, steps)
            took_part = [k for k, i in enumerate(active.tolist())
                         if self._update(st, it, i, x_new[k], probs_new[k], thr[k], rhs[k], lp_info[k])]
            if self.authors:
                self._authors_margin(st, active, took_part, probs_new)
            if not self._report(progress, it, self.max_iterations,
                                f"MLA-LP iteration {it}: {int((~st.done).sum())} of {len(st.done)} still running"):
                break
        for i, steps_of_i in enumerate(st.trace):
            if steps_of_i:
                steps_of_i[-1]["stop"] = st.reason[i] or ("stopped early" if self._stopped else "iteration limit")
        if self.polish != "none" and not self._stopped:
            self._polish(st, progress)
        return AttackRun(x_adv=st.best_x, iterations=st.iterations, model_calls=st.calls, trace=st.trace,
                         elapsed_s=st.elapsed)

    def _polish(self, st: _State, progress: ProgressFn | None) -> None:
        """MLA-LP+: the successes made smaller while they still reach y* (:mod:`.polish`)."""
        moved = (st.best_x != st.x).flatten(1).any(1)
        idx = [i for i in range(len(st.done)) if st.reason[i] == "success" and bool(moved[i])]
        if not idx:
            return
        self._report(progress, self.max_iterations, self.max_iterations,
                     f"MLA-LP+: polishing {len(idx)} success(es) ({self.polish})")
        t0 = time.perf_counter()
        sel = torch.tensor(idx, device=st.x.device)
        if self.polish == "scale":
            out = polish_scale(self.model, st.x[sel], st.best_x[sel], st.tgt[sel], self.threshold, self.polish_steps)
        else:
            out = polish_pgd(self.model, st.x[sel], st.best_x[sel], st.tgt[sel], self.threshold,
                             factor=self.polish_factor, steps=self.polish_steps, step=self.polish_step,
                             rounds=self.polish_rounds)
        if st.x.device.type == "cuda":
            torch.cuda.synchronize(st.x.device)
        seconds = (time.perf_counter() - t0) / len(idx)
        for k, i in enumerate(idx):
            st.best_x[i] = out.x_adv[k]
            st.calls[i] += int(out.calls[k])
            st.elapsed[i] += seconds
            st.trace[i] += out.trace[k]

    def _start(self, x: torch.Tensor, target: torch.Tensor) -> _State:
        """The clean outputs, which labels must flip, and the per-example bookkeeping."""
        b, l = target.shape
        t0, tgt = self.threshold, target.bool()
        with torch.no_grad():
            probs0 = self.model.probabilities(x)
        attacked = (probs0 >= t0) != tgt  # labels the attack must flip
        done = ((probs0 >= t0) == tgt).all(1)
        return _State(
            x=x, tgt=tgt, probs0=probs0, attacked=attacked, hide=attacked & ~tgt, add=attacked & tgt,
            thresholds=torch.full((b, l), t0, dtype=torch.float64, device=x.device), shared_margin=t0,
            x_cur=x.clone(), probs_cur=probs0.clone(), probs_step=probs0.clone(), best_x=x.clone(),
            best_key=_score(probs0, tgt, t0, torch.zeros(b, device=x.device)), done=done,
            iterations=torch.zeros(b, dtype=torch.long), calls=torch.ones(b, dtype=torch.long),  # the clean forward
            elapsed=torch.zeros(b, dtype=torch.float64), trace=[[] for _ in range(b)],
            reason=["already at the target" if bool(done[i]) else "" for i in range(b)],
        )

    def _linearise(self, st: _State, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """A = d loss / dx of the per-label BCE towards y* and b = loss(t) - loss(f(x)), for all
        active examples at once; returns (b, A, the target thresholds t, Jacobian seconds per image)."""
        clamp = AUTHORS_CLAMP if self.authors else None
        tj = time.perf_counter()
        tgt_a = st.tgt[active]
        loss1, jac = batched_jacobian(lambda z: per_label_bce(self.model(z), tgt_a, clamp), st.x_cur[active],
                                      method="loop" if self.jacobian == "loop" else "batched")
        if st.x.device.type == "cuda":
            torch.cuda.synchronize(st.x.device)
        jac_s = (time.perf_counter() - tj) / len(active)
        if self.authors:
            thr = _authors_thresholds(st.hide[active], st.add[active], self.threshold, st.shared_margin)
        else:
            thr = st.thresholds[active]
        rhs = bce_at_threshold(tgt_a, thr, dtype=torch.float64) - loss1.double()
        return rhs, jac, thr, jac_s

    def _solve(self, st: _State, active: torch.Tensor, jac: torch.Tensor, rhs: torch.Tensor,
               jac_s: float) -> tuple[torch.Tensor, list[tuple[Any, bool, float, float]]]:
        """The LP min ||r||_inf s.t. A r <= b (within the [0,1] box with ``box``) per example; a step
        is taken only from an optimal LP (in authors' mode also only if ||r||_inf <= 1)."""
        l, d = st.tgt.shape[1], st.x[0].numel()
        steps = torch.zeros_like(st.x_cur[active])
        idx = active.tolist()
        A = jac.reshape(len(idx), l, d)
        lo = hi = None
        if self.box:
            lo, hi = -st.x_cur[active].reshape(len(idx), d), 1.0 - st.x_cur[active].reshape(len(idx), d)
        if len(idx) > 1 and self.lp_backend in ("auto", "structured") and lp_batched(st.x.device):
            tl = time.perf_counter()
            results = solve_linf_batch(A, rhs, lo, hi, backend=self.lp_backend, tol=self.lp_tol,
                                       drop_zero_rows=self.authors)
            times = [(time.perf_counter() - tl) / len(idx)] * len(idx)
        else:
            results, times = [], []
            for k in range(len(idx)):
                tl = time.perf_counter()
                results.append(solve_linf(A[k], rhs[k], None if lo is None else lo[k], None if hi is None else hi[k],
                                          backend=self.lp_backend, tol=self.lp_tol, drop_zero_rows=self.authors))
                times.append(time.perf_counter() - tl)
        info = []
        for k, (i, res, lp_s) in enumerate(zip(idx, results, times)):
            # authors' mode: r in [-1,1] (an optimum beyond is no step), and r = 0 gives up
            ok = res.status == "optimal" and (not self.authors or 0.0 < res.z <= 1.0)
            if ok:
                steps[k] = res.r.reshape(st.x[i].shape).to(st.x.dtype)
            info.append((res, ok, lp_s, jac_s))
            st.elapsed[i] += jac_s + lp_s
        return steps, info

    def _step(self, st: _State, active: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x + r clipped to [0,1], and the model's outputs there."""
        x_new = (st.x_cur[active] + steps).clamp(0.0, 1.0)
        with torch.no_grad():
            return x_new, self.model.probabilities(x_new)

    def _update(self, st: _State, it: int, i: int, x_new: torch.Tensor, p_new: torch.Tensor, thr: torch.Tensor,
                b: torch.Tensor, lp: tuple[Any, bool, float, float]) -> bool:
        """One example after a step: trace, the give-up rules, keep-best (or the authors' restart),
        success, the per-example margins. Returns False when the example was given up in this step
        (it then takes no part in the authors' margin loop)."""
        res, ok, lp_s, jac_s = lp
        t0, l = self.threshold, st.tgt.shape[1]
        st.iterations[i] = it
        st.calls[i] += 2 + l  # forward + l vectorised backward products + forward after the step
        p_old = st.probs_cur[i]
        r_tot = x_new - st.x[i]
        rms = float(r_tot.double().pow(2).mean().sqrt())
        key = _score(p_new[None], st.tgt[i][None], t0, torch.tensor([rms], device=st.x.device))[0]
        entry = self._trace_entry(st, it, i, res, lp_s, jac_s, r_tot, p_new, thr, b)
        st.trace[i].append(entry)
        if not ok:
            st.reason[i] = ("LP " + res.status if res.status != "optimal" else
                            "LP step beyond [-1,1]" if res.z > 1.0 else "LP returned r = 0")
            entry["note"] = res.message
            entry["gave_up"] = True
            st.done[i] = True
            return False
        # the give-up rule looks at the step itself: the output after it against the output where
        # the Jacobian was taken (in the authors' mode: clamped as their loss clamps it, and after a
        # restart the clean image's)
        p_ref = p_old.clamp(AUTHORS_CLAMP, 1.0 - AUTHORS_CLAMP) if self.authors else p_old
        stalled = self._stalled(it, st.attacked[i], p_ref, p_new)
        if stalled and self.authors:  # authors' mode: given up before the best-iterate update
            st.reason[i] = "attacked labels did not move"
            entry["success"] = False
            entry["gave_up"] = True
            st.done[i] = True
            return False
        p_new = self._keep_best(st, i, x_new, p_new, key, entry)
        success = bool(((p_new >= t0) == st.tgt[i]).all())
        entry["success"] = success
        if success:
            st.done[i] = True
            st.reason[i] = "success"
            if not self.keep_best:
                st.best_x[i] = st.x_cur[i]
            st.probs_cur[i] = p_new
            return True
        if stalled:
            st.done[i] = True
            st.reason[i] = "attacked labels did not move"
            entry["gave_up"] = True
        if not self.authors:
            _lower_margins(st.thresholds[i], st.hide[i], st.add[i], p_old, p_new, t0)
        st.probs_cur[i] = p_new
        if not self.keep_best:
            st.best_x[i] = st.x_cur[i]
        return True

    def _authors_margin(self, st: _State, active: torch.Tensor, took_part: list[int], probs_new: torch.Tensor) -> None:
        """The authors' margin loop after a step, then their reference for the next one: every
        stepped example's outputs (a restart does not reset it)."""
        idx = active[took_part]
        st.shared_margin, lowered = _authors_shared_margin(st.shared_margin, st.hide[idx], st.add[idx],
                                                           st.probs_step[idx], probs_new[took_part])
        for i, low in zip(idx.tolist(), lowered):
            st.trace[i][-1]["margin_lowered"] = low
        st.probs_step[active] = probs_new

    def _keep_best(self, st: _State, i: int, x_new: torch.Tensor, p_new: torch.Tensor, key: torch.Tensor,
                   entry: dict[str, Any]) -> torch.Tensor:
        """Keep a better iterate (more labels matching y*, then smaller RMS distortion) and move on
        from the new point; returns the outputs the example continues from."""
        if _better(key, st.best_key[i]):
            st.best_key[i] = key
            st.best_x[i] = x_new
            st.x_cur[i] = x_new
        elif self.authors and key[0] < st.best_key[i][0]:
            # authors' mode: a step with fewer labels right sends the example back to the clean
            # image and forgets the best iterate
            st.x_cur[i] = st.x[i]
            st.best_x[i] = st.x[i]
            st.best_key[i] = _score(st.probs0[i][None], st.tgt[i][None], self.threshold,
                                    torch.zeros(1, device=st.x.device))[0]
            entry["note"] = "worse step: restarted from the clean image (authors' rule)"
            entry["restart"] = True
            return st.probs0[i]
        else:
            st.x_cur[i] = x_new
        return p_new

    def _failure_detail(self, trace: list[dict[str, Any]]) -> str:
        if self.authors and any("restarted" in e.get("note", "") for e in trace):
            return ("in the authors' mode a worse step restarts from the clean image and forgets the best iterate "
                    "(their rule)")
        return ""

    @staticmethod
    def _stalled(it: int, attacked: torch.Tensor, p_old: torch.Tensor, p_new: torch.Tensor) -> bool:
        """The give-up rule: from the 6th step on, the attacked labels' outputs did not move at all."""
        moved = bool((p_new[attacked] != p_old[attacked]).any())
        return not moved and it >= GIVE_UP_FROM

    def _trace_entry(self, st: _State, it: int, i: int, res: Any, lp_s: float, jac_s: float, r_tot: torch.Tensor,
                     p_new: torch.Tensor, thr: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
        names = self.model.label_names
        flip = st.attacked[i].nonzero().flatten().tolist()
        authors = {"margin": st.shared_margin, "restart": False, "margin_lowered": False} if self.authors else {}
        return {
            "iteration": it,
            "lp_status": res.status,
            "lp_z": float(res.z) if math.isfinite(res.z) else None,
            "lp_gap": float(res.gap) if res.status == "optimal" else None,
            "lp_s": lp_s,
            "jacobian_s": jac_s,
            "linf": float(r_tot.abs().max()),
            "l2": float(r_tot.double().pow(2).sum().sqrt()),
            "labels_wrong": int(((p_new >= self.threshold) != st.tgt[i]).sum()),
            "attacked_probs": {names[j]: float(p_new[j]) for j in flip},
            "margins": {names[j]: float(thr[j]) for j in flip},
            "b": {names[j]: float(b[j]) for j in flip},  # loss(t) - loss(f(x)) of the LP
            "gave_up": False,
            **authors,
        }


@dataclass
class _State:
    """Everything one MLA-LP run on a batch keeps per example (tensors on the attack's device,
    counters on the CPU)."""

    x: torch.Tensor  # clean images
    tgt: torch.Tensor  # y*, bool (B, l)
    probs0: torch.Tensor  # clean outputs
    attacked: torch.Tensor  # labels to flip
    hide: torch.Tensor  # ... down
    add: torch.Tensor  # ... up
    thresholds: torch.Tensor  # per-example target thresholds (float64)
    shared_margin: float  # authors' mode: one threshold for the whole batch
    x_cur: torch.Tensor
    probs_cur: torch.Tensor  # outputs where the next Jacobian is taken
    probs_step: torch.Tensor  # authors' mode: outputs after each example's previous step (kept across a restart)
    best_x: torch.Tensor
    best_key: torch.Tensor  # (B, 2): labels matching y*, -RMS
    done: torch.Tensor
    iterations: torch.Tensor
    calls: torch.Tensor
    elapsed: torch.Tensor
    trace: list[list[dict[str, Any]]]
    reason: list[str]


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


def _authors_shared_margin(margin: float, hide: torch.Tensor, add: torch.Tensor, before: torch.Tensor,
                           after: torch.Tensor) -> tuple[float, list[bool]]:
    """The authors' single threshold for the whole batch, after one step: lowered by 0.05 (float
    subtraction) once for EACH example whose attacked label lags, in batch order, each time only
    while it is still above 0.1 (so 0.5 -> 0.4 -> 0.05 within two steps). Rows: the examples that
    took this step and were not given up in it, one that reached y* in it included (their code
    records a success at the top of the next iteration). Lagging: a hidden label whose output did
    not fall since the example's previous step (``before``; a restart does not reset it) or is
    below 0.6; a label to add, mirrored (our extension). Returns the margin and who lowered it."""
    lowered = []
    for k in range(len(after)):
        lag_hide = (after[k] >= before[k]) | (after[k] < MARGIN_TRIGGER)
        lag_add = (after[k] <= before[k]) | (after[k] > 1.0 - MARGIN_TRIGGER)
        trigger = bool((hide[k] & lag_hide).any() or (add[k] & lag_add).any())
        low = trigger and margin > MARGIN_FLOOR
        if low:
            margin = margin - MARGIN_STEP
        lowered.append(low)
    return margin, lowered
