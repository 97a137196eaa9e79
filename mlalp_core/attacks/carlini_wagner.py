"""Carlini-Wagner L2 machinery shared by ML-CW, ML-Rank1 and ML-Rank2 (Song et al., ICDM 2018).

Distance: l_2 in [0,1] pixel units. The three attacks minimise, per image,
``||x' - x||_2^2 + c * loss1(f(x'))`` over ``x' = (tanh(w) + 1) / 2`` (so x' stays in [0,1]) with
Adam, and binary-search ``c`` per image. They differ only in ``loss1`` (the plain functions
:func:`.cw_losses.ml_cw_loss`, :func:`.cw_losses.rank1_loss`, :func:`.cw_losses.rank2_loss`) and in
which iterate they keep (:meth:`CarliniWagnerL2._score`). What a run keeps per image (the binary
search on c, a step's Adam state, the running images) is in :mod:`.cw_state`. The defaults are the settings of the MLA-LP paper's comparison
(Sec. IV.D) as its authors ran them: 1000 Adam iterations at lr 0.01 (state reset at each
binary-search step), 10 binary-search steps from c = 1e5, early abort every ``max_iterations // 10``
iterations when the loss did not fall below 0.9999 of the last check, no confidence margin, no
repeat of the last step at the smallest successful c (Carlini's code has it, the authors' line has
no effect; with Adam restarted from the same point a repeat only reproduces a step already run,
to the last digit, while one more bisection step can find a smaller l_2: tested).

Everything is batched: B images are optimised in one tensor, each with its own c, bounds, best
iterate and early abort, so attacking a batch gives what attacking each image alone gives.

Two savings of our own (mode "mlalp"; the authors' mode has neither), measured on the demo Table
III (``bench/cw_speed.py``, ``bench/results/cw_speed_cpu.txt``: on the first 16 images per demo
model, no outcome changed and the mean l_2 agrees to 4 digits, at 0.52 of the time; ML-CW 0.50-0.55,
ML-Rank1 0.31-0.34, ML-Rank2 0.71-0.85):

- ``success_patience`` (2 for ML-CW, 0 for the Rank attacks): a binary step whose best iterate
  already reaches y* stops at a stall check once that iterate has not been bettered for 2 check
  intervals (200 iterations). For ML-CW the step's verdict, hence the search, is settled then
  (an iterate that misses y* matches fewer labels, so it cannot displace a success); only its
  l_2 could still fall. The Rank attacks keep the iterate of highest cosine, which can be one
  that misses y*, so there the rule would change which iterate is kept (replaying the recorded
  trajectories of 16 demo images, it turned one ML-Rank2 failure into a success): off by default. At c = 1e5
  Adam's momentum carries the iterate past its first crossing, which stays the step's best while
  the loss falls back towards it (so the loss rule does not fire) for up to all 1000 iterations;
  and the first steps' iterates are bettered by the later, smaller c anyway.
- ``give_up_after`` (2): an image that failed its first 2 binary steps (c = 1e5, then 1e6) stops
  the search. Its c only grows tenfold per step, and once c loss1 dominates, a larger c only
  rescales the gradient, which Adam normalises away: on the full demo Table III (354 CW-family
  runs) no image that failed at 1e5 and 1e6 succeeded at any larger c; ML-Rank1 fails about 90 %
  of its images and spent most of its model calls on those steps.

The loop works in place on the running images' own tensors: the batch's while every image runs,
copies of the rest's made once when some stop, instead of gathering them by index at every
iteration (the same numbers to the last bit). With that, the GCN label-branch cache and what
``Attack.__call__`` does around every attack (parameters frozen, freed memory kept: the old
code's page faults cost 5.5 % of its time in system time alone), the CW family took 0.497 of the
old loop's time on ``bench/cw_speed.py`` (``bench/results/cw_speed_cpu_cache.txt``); with the
defaults in both arms, this code takes 0.895 of the old code's time, every x_adv the same
(``--same after``, ``bench/results/cw_speed_cpu_same_after.txt``).

``mode="authors"`` reproduces the authors' code (the README's table lists each behaviour): the
early abort is decided on the loss summed over the batch (so results depend on the batch: they
ran 18 images per batch), its "last check" restarts at 1e10 in every binary step (once c is
around 1e10 a step stops at its first check: iterations per step 1000, 1000, 801, 1000, 701, 1,
1, 1, 1, 1), there is no repeat at the upper bound (their line builds the constant before it sets
c, so it has no effect), and ML-Rank1/ML-Rank2 keep the iterate closest in cosine to their target
vector (-2 hidden, +2 added, -1/+1 unchanged).

Example::

    attack = MLCW(model, max_iterations=200, binary_search_steps=5)
    result = attack(x, hide_one(model.predict(x), seed=0))   # x: (B, 3, H, W) in [0,1]
"""

from __future__ import annotations

import dataclasses
import math
from abc import abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .base import Attack, AttackRun, ProgressFn
from .cw_losses import labels_matching, ml_cw_loss, rank1_loss, rank2_loss
from .cw_state import _NO_UPPER_BOUND, _UPPER_KNOWN, TargetSets, _CWState, _Running, _StepState, update_binary_search
from .schema import Schema, Setting

#: The authors' early abort compares the first check of every binary step with this loss.
_AUTHORS_FIRST_CHECK = 1e10
#: inputs enter tanh space as arctanh((2x - 1) * _TANH_SHRINK) so that 0 and 1 stay finite
_TANH_SHRINK = 0.999999
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
#: what the stall check returns when every running image goes on (no gather needed)
_KEEP_ALL = torch.ones(0, dtype=torch.bool)

CW_SETTINGS: tuple[Setting, ...] = (
    Setting("max_iterations", int, 1000, "Adam iterations per binary-search step", "max iterations",
            low=1, high=1_000_000),
    Setting("binary_search_steps", int, 10, "values of c tried per image", "binary-search steps", low=1, high=1000),
    Setting("initial_const", float, 1e5, "the first c", "initial c", low=0.0, high=1e15, low_open=True),
    Setting("learning_rate", float, 0.01, "Adam's step size in tanh space", "learning rate",
            low=0.0, high=100.0, low_open=True),
    Setting("abort_early", bool, True, "stop a binary-search step when the loss stalls", "abort early"),
    Setting("abort_every", int, None, "iterations between stall checks", "abort check every",
            low=1, high=1_000_000, none_means="max(1, max_iterations // 10)"),
    Setting("repeat_at_upper_bound", bool, False, "with >= 10 binary steps, run the last one at the smallest "
            "c that succeeded (Carlini's code; the authors' version of the line has no effect). Off: Adam restarts "
            "from the same point, so the repeat reproduces a step already run; off, the last step bisects once more",
            "repeat at the upper bound"),
    Setting("give_up_after", int, 2, "stop an image after this many binary-search steps when none of them "
            "reached y* (c grew tenfold each time; 0: never). Once c loss1 dominates, a larger c only rescales the "
            "gradient, which Adam normalises away; on the demo Table III no image that failed at c = 1e5 and 1e6 "
            "succeeded at a larger c", "give up after", low=0, high=1000),
    Setting("success_patience", int, 2, "a binary step whose best iterate already reaches y* stops at a stall "
            "check once that iterate has not been bettered for this many check intervals (0: never). For ML-CW the "
            "step's verdict is then settled (no iterate that misses y* can displace it); only its l_2 could still "
            "fall. The Rank attacks keep the iterate of highest cosine, which can be one that misses y*: off by "
            "default there", "success patience", low=0, high=1_000_000),
    Setting("mode", str, "mlalp", "mlalp: each image aborts on its own loss; authors: the authors' code "
            "(the abort on the batch's loss from 1e10 each step, no repeat at the upper bound, their "
            "cosine reference)", "behaviour", choices=("mlalp", "authors")),
)
#: the Rank attacks' settings: no success patience by default (a later iterate that misses y* can
#: have a higher cosine and displace a success: stopping early would change which is kept)
RANK_SETTINGS: tuple[Setting, ...] = tuple(
    dataclasses.replace(s, default=0) if s.name == "success_patience" else s for s in CW_SETTINGS)
COSINE_REFERENCE = Setting("cosine_reference", str, "target", "the vector iterates are compared with: target "
                           "(y* in {-1,+1}) or authors (-2 hidden, +2 added, -1/+1 unchanged)",
                           "cosine reference", choices=("target", "authors"))


class CarliniWagnerL2(Attack):
    """The shared CW-L2 loop; subclasses give ``_loss1`` and ``_score``.

    Settings: :data:`CW_SETTINGS` (defaults = the paper's comparison). ``model_calls`` counts one
    forward and one backward per Adam iteration (plus the clean forward). ``trace`` has one dict
    per binary-search step.
    """

    schema: ClassVar[Schema] = Schema("ml-cw", CW_SETTINGS)
    # the settings as attributes, for type checkers (checked against the schema at import)
    max_iterations: int
    binary_search_steps: int
    initial_const: float
    learning_rate: float
    abort_early: bool
    abort_every: int | None
    repeat_at_upper_bound: bool
    give_up_after: int
    success_patience: int
    mode: str
    authors_fixes: ClassVar[dict[str, Any]] = {"repeat_at_upper_bound": False, "give_up_after": 0,
                                               "success_patience": 0}
    authors_batch: ClassVar[int | None] = 18  # their CW-family batches (the abort is decided per batch)
    #: work in place on the running images' own tensors (False: gather them by index at every iteration,
    #: the slower path; the tests check that both give the same numbers)
    in_place_when_whole: ClassVar[bool] = True

    @property
    def check_every(self) -> int:
        return self.abort_every if self.abort_every is not None else max(1, self.max_iterations // 10)

    # ---- what the three attacks change -----------------------------------------------------------
    @abstractmethod
    def _loss1(self, probs: torch.Tensor, sets: TargetSets) -> torch.Tensor:
        """(B,) the attack's loss term on the sigmoid outputs."""

    def _score(self, probs: torch.Tensor, sets: TargetSets) -> torch.Tensor:
        """(B,) float: larger is a better iterate (ties go to the smaller l2). Default: labels
        whose prediction matches y*."""
        return labels_matching(probs, sets.target, self.threshold).to(torch.float64)

    def _target_sets(self, target: torch.Tensor, clean_pred: torch.Tensor) -> TargetSets:
        t = target.bool()
        return TargetSets(
            target=t,
            target_pm1=t.to(torch.float32) * 2 - 1,
            hidden=clean_pred & ~t,
            stay_negative=~clean_pred & ~t,
            added=~clean_pred & t,
        )

    # ---- the loop ------------------------------------------------------------------------------
    def _run(self, x: torch.Tensor, target: torch.Tensor, progress: ProgressFn | None) -> AttackRun:
        st = self._start(x, target)
        for step in range(self.binary_search_steps):
            if self.repeat_at_upper_bound and self.binary_search_steps >= 10 and step == self.binary_search_steps - 1:
                st.c = st.upper.clone()
            ss = self._binary_step(st, step, progress)
            c_used = st.c.clone()
            ran_step = ~st.gave_up
            st.c, st.lower, st.upper = update_binary_search(st.c, st.lower, st.upper, ss.success)
            st.iterations += ss.ran
            if self.give_up_after and step + 1 >= self.give_up_after:  # no success in every step so far
                st.gave_up |= st.upper >= _UPPER_KNOWN
            self._trace_step(st, ss, step, c_used, ran_step)
            if bool(st.gave_up.all()):
                break
            if self._stopped or not self._report(
                    progress, (step + 1) * self.max_iterations, self.binary_search_steps * self.max_iterations,
                    f"{self.name}: binary step {step + 1}/{self.binary_search_steps} done, "
                    f"{int(ss.success.sum())}/{len(ss.success)} succeeded"):
                break
        return AttackRun(x_adv=st.best_x, iterations=st.iterations, model_calls=st.calls, trace=st.trace)

    def _start(self, x: torch.Tensor, target: torch.Tensor) -> _CWState:
        b, dev = x.shape[0], x.device
        with torch.no_grad():
            clean_pred = self.model.probabilities(x) >= self.threshold
        sets = self._target_sets(target, clean_pred)
        w0 = torch.atanh((2 * x - 1) * _TANH_SHRINK)
        f64: dict[str, Any] = dict(dtype=torch.float64, device=dev)
        return _CWState(
            sets=sets, w0=w0, x_ref=(torch.tanh(w0) + 1) / 2,  # the distance is to x as tanh space sees it
            c=torch.full((b,), float(self.initial_const), **f64), lower=torch.zeros(b, **f64),
            upper=torch.full((b,), _NO_UPPER_BOUND, **f64), best_score=torch.full((b,), float("-inf"), **f64),
            best_l2sq=torch.full((b,), float("inf"), **f64),
            best_match=(clean_pred == sets.target).sum(dim=1),  # of best_x, the clean image until replaced
            best_x=x.clone(), iterations=torch.zeros(b, dtype=torch.long, device=dev),
            calls=torch.ones(b, dtype=torch.long, device=dev), trace=[[] for _ in range(b)],
            gave_up=torch.zeros(b, dtype=torch.bool, device=dev),
        )

    def _binary_step(self, st: _CWState, step: int, progress: ProgressFn | None) -> _StepState:
        """Up to ``max_iterations`` Adam steps at the current c (Adam's state reset), each image
        leaving when its loss stalls; returns what the binary search needs.

        The loop works in place on the running images' own tensors (:class:`_Running`): the
        batch's while every image runs, copies of the rest's made once when some leave at a
        stall check. ``in_place_when_whole = False``: gathered by index at every iteration and
        written back (the older, slower path; the same numbers).
        """
        ss = _StepState.new(st.best_x)
        if self.mode == "authors":  # their "last check" restarts at 1e10 in every binary step
            ss.prev_batch = _AUTHORS_FIRST_CHECK
        gathered = not self.in_place_when_whole
        run = _Running.of(st, ss)
        if bool(st.gave_up.any()):
            ss.active &= ~st.gave_up
            run = run.take(ss.active)
        for it in range(self.max_iterations):
            if run.idx.numel() == 0:
                break
            if gathered:
                run = _Running.of(st, ss, run.idx)
            img, probs, l2sq, loss, grad = self._forward(run)
            if run.whole:
                st.calls += 2
                ss.ran += 1
            else:
                st.calls[run.idx] += 2
                ss.ran[run.idx] += 1
            loss64 = loss.detach().double()
            keep = self._abort_check(ss, it, run.idx, loss64)  # before the iterate is recorded, as theirs
            if keep is None:
                break
            img, probs, l2sq64 = img.detach(), probs.detach(), l2sq.detach().double()
            if keep is not _KEEP_ALL:  # some images stop here: the rest go on, on copies of their own
                loss64, img, probs, l2sq64, grad = loss64[keep], img[keep], probs[keep], l2sq64[keep], grad[keep]
                run = run.take(keep)
            if run.whole:
                ss.last_loss.copy_(loss64)
            else:
                ss.last_loss[run.idx] = loss64
            self._keep_best(st, ss, run.idx, img, probs, l2sq64, run.sets, it)
            self._adam(run, it, grad)
            if gathered:
                run.write_back(ss)
            if (it + 1) % 10 == 0 and not self._report(
                    progress, step * self.max_iterations + it + 1, self.binary_search_steps * self.max_iterations,
                    f"{self.name}: binary step {step + 1}/{self.binary_search_steps}, "
                    f"iteration {it + 1}/{self.max_iterations}"):
                break
        return ss

    def _forward(self, run: _Running) -> tuple[torch.Tensor, ...]:
        """The objective ||x' - x||^2 + c loss1(f(x')) at x' = (tanh(w0 + delta) + 1) / 2 on the
        running images, and its gradient with respect to delta."""
        d = run.delta.detach().requires_grad_(True)
        with torch.enable_grad():
            img = (torch.tanh(run.w0 + d) + 1) / 2
            probs = self.model.probabilities(img)
            l2sq = (img - run.x_ref).pow(2).flatten(1).sum(1)
            loss = l2sq + run.c.to(probs.dtype) * self._loss1(probs, run.sets)
            (grad,) = torch.autograd.grad(loss.sum(), d)
        return img, probs, l2sq, loss, grad

    def _abort_check(self, ss: _StepState, it: int, idx: torch.Tensor, loss64: torch.Tensor) -> torch.Tensor | None:
        """Early abort every ``check_every`` iterations: the images whose loss did not fall below
        0.9999 of the last check stop, and (``success_patience``) those whose step already reached
        y* with a best iterate not bettered for ``success_patience`` check intervals. Returns
        which of ``idx`` go on (:data:`_KEEP_ALL`: all of them; None: the whole batch stops, in
        the authors' mode)."""
        if not self.abort_early or it % self.check_every != 0:
            return _KEEP_ALL
        if self.mode == "authors":
            batch_loss = float(loss64.sum())
            if batch_loss > ss.prev_batch * 0.9999:
                ss.active[:] = False
                return None
            ss.prev_batch = batch_loss
            return _KEEP_ALL
        prev = ss.prev[idx]
        keep = ~(loss64 > prev * 0.9999)
        ss.prev[idx] = torch.where(keep, loss64, prev)
        if self.success_patience:  # the step already reached y* and its best iterate has stood still
            keep &= ~(ss.success[idx] & (it - ss.improved_at[idx] >= self.success_patience * self.check_every))
        if bool(keep.all()):
            return _KEEP_ALL
        ss.active[idx[~keep]] = False
        return keep

    def _keep_best(self, st: _CWState, ss: _StepState, idx: torch.Tensor, img: torch.Tensor, probs: torch.Tensor,
                   l2sq: torch.Tensor, sets: TargetSets, it: int) -> None:
        """The best iterate of this binary step (it decides the search) and overall (returned)."""
        score = self._score(probs, sets)
        succ = labels_matching(probs, sets.target, self.threshold) == sets.target.shape[1]
        better = (score > ss.score[idx]) | ((score == ss.score[idx]) & (l2sq < ss.l2sq[idx]))
        sel = idx[better]
        ss.score[sel], ss.l2sq[sel], ss.success[sel] = score[better], l2sq[better], succ[better]
        ss.improved_at[sel] = it
        better = (score > st.best_score[idx]) | ((score == st.best_score[idx]) & (l2sq < st.best_l2sq[idx]))
        sel = idx[better]
        st.best_score[sel], st.best_l2sq[sel] = score[better], l2sq[better]
        st.best_match[sel] = labels_matching(probs[better], sets.target[better], self.threshold)
        st.best_x[sel] = img[better]

    def _adam(self, run: _Running, it: int, g: torch.Tensor) -> None:
        """One Adam step (torch's update rule) on the running images, in place."""
        b1, b2 = _ADAM_BETAS
        t = it + 1
        m = run.adam_m.mul_(b1).add_(g, alpha=1 - b1)
        v = run.adam_v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = v.sqrt().div_(math.sqrt(1 - b2**t)).add_(_ADAM_EPS)
        run.delta.sub_(m.mul(self.learning_rate / (1 - b1**t)).div_(denom))

    def _failure_detail(self, trace: list[dict[str, Any]]) -> str:
        if trace and not any(s.get("step_success") for s in trace):
            gave_up = " (it gave up there: a larger c only rescales the gradient)" if trace[-1].get("gave_up") else ""
            return (f"no value of c in its {len(trace)} binary-search steps (up to {trace[-1]['c']:.3g}) reached "
                    f"y*{gave_up}")
        return ""

    def _trace_step(self, st: _CWState, ss: _StepState, step: int, c_used: torch.Tensor,
                    ran_step: torch.Tensor) -> None:
        """One entry per image that ran this step (an image that gave up has none for later steps)."""
        for e in range(len(st.trace)):
            if not bool(ran_step[e]):
                continue
            best_l2sq = float(st.best_l2sq[e])
            st.trace[e].append({
                "step": step,
                "c": float(c_used[e]),
                "iterations": int(ss.ran[e]),
                "aborted": bool(ss.ran[e] < self.max_iterations),
                "loss": float(ss.last_loss[e]),
                "step_success": bool(ss.success[e]),
                "best_l2": math.sqrt(best_l2sq) if math.isfinite(best_l2sq) else None,
                "best_labels_matching": int(st.best_match[e]),
                "best_score": float(st.best_score[e]),
                **({"gave_up": True} if bool(st.gave_up[e]) else {}),
            })


class MLCW(CarliniWagnerL2):
    """ML-CW: loss1 = :func:`ml_cw_loss`; keeps the iterate with the most labels matching y*,
    then the smaller l2."""

    name: ClassVar[str] = "ml-cw"
    display_name: ClassVar[str] = "ML-CW"
    schema: ClassVar[Schema] = Schema("ml-cw", CW_SETTINGS)

    def _loss1(self, probs: torch.Tensor, sets: TargetSets) -> torch.Tensor:
        return ml_cw_loss(probs, sets.target_pm1, self.threshold)


class _RankAttack(CarliniWagnerL2):
    """Rank attacks keep the iterate whose outputs have the highest cosine similarity with y*.

    ``cosine_reference``: "target" compares with y* in {-1,+1} (REFERENCE.md); "authors" with
    the authors' weighted vector (-2 on hidden labels, +2 on added ones, -1/+1 on the others).
    """

    cosine_reference: str
    authors_fixes: ClassVar[dict[str, Any]] = {**CarliniWagnerL2.authors_fixes, "cosine_reference": "authors"}

    @classmethod
    def target_problem(cls, target: torch.Tensor) -> str:
        t = target.bool().reshape(-1)
        if not bool(t.any()) or bool(t.all()):
            side = "no positive" if not bool(t.any()) else "no negative"
            return (f"{cls.display_name}'s ranking loss compares positive with negative labels, and y* has {side} "
                    "label: it is 0 from the start and the attack cannot move (objectives hide-all and show-many)")
        return ""

    def _score(self, probs: torch.Tensor, sets: TargetSets) -> torch.Tensor:
        if self.cosine_reference == "authors":
            ref = sets.target_pm1 + sets.added.to(probs.dtype) - sets.hidden.to(probs.dtype)
        else:
            ref = sets.target_pm1
        return F.cosine_similarity(probs.double(), ref.double(), dim=1)


class MLRank1(_RankAttack):
    """ML-Rank1: loss1 = :func:`rank1_loss`."""

    name: ClassVar[str] = "ml-rank1"
    display_name: ClassVar[str] = "ML-Rank1"
    schema: ClassVar[Schema] = Schema("ml-rank1", RANK_SETTINGS + (COSINE_REFERENCE,))

    def _loss1(self, probs: torch.Tensor, sets: TargetSets) -> torch.Tensor:
        return rank1_loss(probs, sets.target_pm1)


class MLRank2(_RankAttack):
    """ML-Rank2: loss1 = :func:`rank2_loss` with A+ / B- taken from the clean prediction."""

    name: ClassVar[str] = "ml-rank2"
    display_name: ClassVar[str] = "ML-Rank2"
    schema: ClassVar[Schema] = Schema("ml-rank2", RANK_SETTINGS + (COSINE_REFERENCE,))

    def _loss1(self, probs: torch.Tensor, sets: TargetSets) -> torch.Tensor:
        return rank2_loss(probs, sets.target_pm1, sets.hidden, sets.stay_negative)
