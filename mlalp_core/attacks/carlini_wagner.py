"""Carlini-Wagner L2 machinery shared by ML-CW, ML-Rank1 and ML-Rank2 (Song et al., ICDM 2018).

Distance: l_2 in [0,1] pixel units. The three attacks minimise, per image,
``||x' - x||_2^2 + c * loss1(f(x'))`` over ``x' = (tanh(w) + 1) / 2`` (so x' stays in [0,1]) with
Adam, and binary-search ``c`` per image. They differ only in ``loss1`` (the plain functions
:func:`ml_cw_loss`, :func:`rank1_loss`, :func:`rank2_loss`) and in which iterate they keep
(:meth:`CarliniWagnerL2._score`). The defaults are the settings of the MLA-LP paper's comparison
(Sec. IV.D) as its authors ran them: 1000 Adam iterations at lr 0.01 (state reset at each
binary-search step), 10 binary-search steps from c = 1e5, early abort every ``max_iterations // 10``
iterations when the loss did not fall below 0.9999 of the last check, no confidence margin.

Everything is batched: B images are optimised in one tensor, each with its own c, bounds, best
iterate and early abort, so attacking a batch gives what attacking each image alone gives
(``abort_per_batch=True`` reproduces the authors' batch-summed abort, which breaks that).

Example::

    attack = MLCW(model, max_iterations=200, binary_search_steps=5)
    result = attack(x, hide_one(model.predict(x), seed=0))   # x: (B, 3, H, W) in [0,1]
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .base import Attack, AttackRun, ProgressFn
from .schema import Schema, Setting

#: Upper bound of c before any success (Carlini's code and the authors'); "< 1e9" tests for it.
_NO_UPPER_BOUND = 1e10
_UPPER_KNOWN = 1e9
#: inputs enter tanh space as arctanh((2x - 1) * _TANH_SHRINK) so that 0 and 1 stay finite
_TANH_SHRINK = 0.999999
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


# ---------------------------------------------------------------------------------------------
# The three loss1 terms, on sigmoid outputs f (B, l) and y* in {-1,+1} (B, l); each returns (B,)
# ---------------------------------------------------------------------------------------------


def ml_cw_loss(probs: torch.Tensor, target_pm1: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """ML-CW: sum_j max(0, -y*_j (f_j - t)): how far each label is on the wrong side of t."""
    return torch.clamp(-target_pm1.to(probs.dtype) * (probs - threshold), min=0.0).sum(dim=1)


def _masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return values.masked_fill(~mask, float("-inf")).amax(dim=1)


def _masked_min(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return values.masked_fill(~mask, float("inf")).amin(dim=1)


def _rank_gap(probs: torch.Tensor, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """max(0, max_{j in high} f_j - min_{k in low} f_k), and 0 where either set is empty."""
    gap = _masked_max(probs, high) - _masked_min(probs, low)  # -inf when a set is empty
    defined = high.any(dim=1) & low.any(dim=1)
    return torch.where(defined, torch.clamp(gap, min=0.0), torch.zeros_like(gap))


def rank1_loss(probs: torch.Tensor, target_pm1: torch.Tensor) -> torch.Tensor:
    """ML-Rank1: max(0, max_{y*_j=-1} f_j - min_{y*_j=+1} f_j).

    0 when y* has no positive or no negative label (the authors' masking gives the same for
    sigmoid outputs: the missing side contributes 0 to the max, 1 to the min).
    """
    return _rank_gap(probs, target_pm1 < 0, target_pm1 > 0)


def rank2_loss(probs: torch.Tensor, target_pm1: torch.Tensor, hidden_mask: torch.Tensor,
               stay_negative_mask: torch.Tensor) -> torch.Tensor:
    """ML-Rank2: Rank1 + max(0, max_{j in A+} f_j - min_{k in B-} f_k).

    A+ (``hidden_mask``) are the labels being hidden (positive before the attack, negative in y*);
    B- (``stay_negative_mask``) the labels negative before and in y*. The second term is 0 when
    A+ or B- is empty (nothing to hide, or no label that stays negative).
    """
    return rank1_loss(probs, target_pm1) + _rank_gap(probs, hidden_mask.bool(), stay_negative_mask.bool())


def labels_matching(probs: torch.Tensor, target: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B,) number of labels whose prediction at ``threshold`` equals y* (bool or {-1,+1})."""
    return ((probs >= threshold) == (target > 0)).sum(dim=1)


# ---------------------------------------------------------------------------------------------
# Binary search on c
# ---------------------------------------------------------------------------------------------


def update_binary_search(
    c: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, success: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One binary-search update per example; returns new (c, lower, upper).

    Success: upper := min(upper, c), then c := (lower + upper) / 2 once an upper bound is known.
    Failure: lower := max(lower, c), then c := (lower + upper) / 2 if an upper bound is known
    (upper < 1e9), else c := 10 c. (min/max as in the authors' code; in every reachable state
    they equal the plain assignments upper := c, lower := c.)
    """
    success = success.bool()
    upper = torch.where(success, torch.minimum(upper, c), upper)
    lower = torch.where(success, lower, torch.maximum(lower, c))
    known = upper < _UPPER_KNOWN
    mid = (lower + upper) / 2
    c = torch.where(known, mid, torch.where(success, c, c * 10))
    return c, lower, upper


# ---------------------------------------------------------------------------------------------
# The shared core
# ---------------------------------------------------------------------------------------------


@dataclass
class TargetSets:
    """Per-example label sets the losses and scores need (all (B, l))."""

    target: torch.Tensor  # bool y*
    target_pm1: torch.Tensor  # y* in {-1,+1}, float
    hidden: torch.Tensor  # A+: predicted positive before the attack, negative in y*
    stay_negative: torch.Tensor  # B-: predicted negative before the attack and in y*
    added: torch.Tensor  # A-: predicted negative before the attack, positive in y*

    def take(self, idx: torch.Tensor) -> TargetSets:
        return TargetSets(*(getattr(self, f.name)[idx] for f in fields(self)))


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
    Setting("abort_per_batch", bool, False, "decide the abort on the loss summed over the batch, as the "
            "authors' code did (false: each image decides for itself)", "abort on the batch's loss"),
    Setting("repeat_at_upper_bound", bool, True, "with >= 10 binary steps, run the last one at the smallest "
            "c that succeeded (Carlini's code)", "repeat at the upper bound"),
)
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
        model = self.model
        b, dev = x.shape[0], x.device
        with torch.no_grad():
            clean_pred = model.probabilities(x) >= self.threshold
        sets = self._target_sets(target, clean_pred)

        w0 = torch.atanh((2 * x - 1) * _TANH_SHRINK)
        x_ref = (torch.tanh(w0) + 1) / 2  # the distance is measured to x as tanh space sees it
        f64 = dict(dtype=torch.float64, device=dev)
        c = torch.full((b,), float(self.initial_const), **f64)
        lower = torch.zeros(b, **f64)
        upper = torch.full((b,), _NO_UPPER_BOUND, **f64)
        best_score = torch.full((b,), float("-inf"), **f64)
        best_l2sq = torch.full((b,), float("inf"), **f64)
        best_match = (clean_pred == sets.target).sum(dim=1)  # of best_x, the clean image until replaced
        best_x = x.clone()
        iterations = torch.zeros(b, dtype=torch.long, device=dev)
        calls = torch.ones(b, dtype=torch.long, device=dev)
        trace: list[list[dict[str, Any]]] = [[] for _ in range(b)]
        b1, b2 = _ADAM_BETAS
        total = self.binary_search_steps * self.max_iterations
        every = self.check_every

        for step in range(self.binary_search_steps):
            if self.repeat_at_upper_bound and self.binary_search_steps >= 10 and step == self.binary_search_steps - 1:
                c = upper.clone()
            delta = torch.zeros_like(x)
            adam_m = torch.zeros_like(x)
            adam_v = torch.zeros_like(x)
            step_score = torch.full((b,), float("-inf"), **f64)
            step_l2sq = torch.full((b,), float("inf"), **f64)
            step_success = torch.zeros(b, dtype=torch.bool, device=dev)
            active = torch.ones(b, dtype=torch.bool, device=dev)
            prev = torch.full((b,), float("inf"), **f64)
            prev_batch = float("inf")
            last_loss = torch.full((b,), float("nan"), **f64)
            ran = torch.zeros(b, dtype=torch.long, device=dev)

            for it in range(self.max_iterations):
                idx = active.nonzero().flatten()
                if idx.numel() == 0:
                    break
                d = delta[idx].requires_grad_(True)
                sub = sets.take(idx)
                with torch.enable_grad():
                    img = (torch.tanh(w0[idx] + d) + 1) / 2
                    probs = model.probabilities(img)
                    l2sq = (img - x_ref[idx]).pow(2).flatten(1).sum(1)
                    loss = l2sq + c[idx].to(probs.dtype) * self._loss1(probs, sub)
                    (grad,) = torch.autograd.grad(loss.sum(), d)
                calls[idx] += 2
                ran[idx] += 1
                loss64 = loss.detach().double()

                # stall check on the loss at the current iterate (before it is recorded, as theirs)
                keep = torch.ones(idx.numel(), dtype=torch.bool, device=dev)
                if self.abort_early and it % every == 0:
                    if self.abort_per_batch:
                        batch_loss = float(loss64.sum())
                        if batch_loss > prev_batch * 0.9999:
                            active[:] = False
                            break
                        prev_batch = batch_loss
                    else:
                        keep = ~(loss64 > prev[idx] * 0.9999)
                        prev[idx] = torch.where(keep, loss64, prev[idx])
                        active[idx[~keep]] = False
                idx_k = idx[keep]
                probs_k = probs.detach()[keep]
                l2_k = l2sq.detach().double()[keep]
                sub_k = sub.take(keep)
                last_loss[idx_k] = loss64[keep]

                # best iterate of this step (decides the binary search) and overall (returned)
                score = self._score(probs_k, sub_k)
                succ = labels_matching(probs_k, sub_k.target, self.threshold) == target.shape[1]
                better = (score > step_score[idx_k]) | ((score == step_score[idx_k]) & (l2_k < step_l2sq[idx_k]))
                sel = idx_k[better]
                step_score[sel], step_l2sq[sel], step_success[sel] = score[better], l2_k[better], succ[better]
                better = (score > best_score[idx_k]) | ((score == best_score[idx_k]) & (l2_k < best_l2sq[idx_k]))
                sel = idx_k[better]
                best_score[sel], best_l2sq[sel] = score[better], l2_k[better]
                best_match[sel] = labels_matching(probs_k[better], sub_k.target[better], self.threshold)
                best_x[sel] = img.detach()[keep][better]

                # Adam (torch's update rule), only on the images still running
                t = it + 1
                g = grad[keep]
                m = adam_m[idx_k].mul_(b1).add_(g, alpha=1 - b1)
                v = adam_v[idx_k].mul_(b2).addcmul_(g, g, value=1 - b2)
                adam_m[idx_k], adam_v[idx_k] = m, v
                denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(_ADAM_EPS)
                delta[idx_k] = d.detach()[keep] - (self.learning_rate / (1 - b1**t)) * m / denom

                if progress is not None and (it + 1) % 10 == 0:
                    progress(step * self.max_iterations + it + 1, total,
                             f"{self.name}: binary step {step + 1}/{self.binary_search_steps}, "
                             f"iteration {it + 1}/{self.max_iterations}")

            c_used = c.clone()
            c, lower, upper = update_binary_search(c, lower, upper, step_success)
            iterations += ran
            for e in range(b):
                trace[e].append({
                    "step": step,
                    "c": float(c_used[e]),
                    "iterations": int(ran[e]),
                    "aborted": bool(ran[e] < self.max_iterations),
                    "loss": float(last_loss[e]),
                    "step_success": bool(step_success[e]),
                    "best_l2": math.sqrt(float(best_l2sq[e])) if math.isfinite(float(best_l2sq[e])) else None,
                    "best_labels_matching": int(best_match[e]),
                    "best_score": float(best_score[e]),
                })
            if progress is not None:
                progress((step + 1) * self.max_iterations, total,
                         f"{self.name}: binary step {step + 1}/{self.binary_search_steps} done, "
                         f"{int(step_success.sum())}/{b} succeeded")

        return AttackRun(x_adv=best_x, iterations=iterations, model_calls=calls, trace=trace)


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
    schema: ClassVar[Schema] = Schema("ml-rank1", CW_SETTINGS + (COSINE_REFERENCE,))

    def _loss1(self, probs: torch.Tensor, sets: TargetSets) -> torch.Tensor:
        return rank1_loss(probs, sets.target_pm1)


class MLRank2(_RankAttack):
    """ML-Rank2: loss1 = :func:`rank2_loss` with A+ / B- taken from the clean prediction."""

    name: ClassVar[str] = "ml-rank2"
    display_name: ClassVar[str] = "ML-Rank2"
    schema: ClassVar[Schema] = Schema("ml-rank2", CW_SETTINGS + (COSINE_REFERENCE,))

    def _loss1(self, probs: torch.Tensor, sets: TargetSets) -> torch.Tensor:
        return rank2_loss(probs, sets.target_pm1, sets.hidden, sets.stay_negative)
