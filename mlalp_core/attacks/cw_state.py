"""What a Carlini-Wagner run keeps per image: the label sets, the binary search on c, one binary
step's Adam state and best iterate, and the images still running (see :mod:`.carlini_wagner`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

#: Upper bound of c before any success (Carlini's code and the authors'); "< 1e9" tests for it.
_NO_UPPER_BOUND = 1e10
_UPPER_KNOWN = 1e9


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


@dataclass
class _CWState:
    """What a CW run keeps across binary-search steps, per image."""

    sets: TargetSets
    w0: torch.Tensor  # the clean images in tanh space
    x_ref: torch.Tensor  # the clean images as tanh space sees them
    c: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    best_score: torch.Tensor
    best_l2sq: torch.Tensor
    best_match: torch.Tensor
    best_x: torch.Tensor
    iterations: torch.Tensor
    calls: torch.Tensor
    trace: list[list[dict[str, Any]]]
    gave_up: torch.Tensor  # images that stopped the search (give_up_after failed steps)


@dataclass
class _StepState:
    """What one binary-search step keeps per image (Adam's state, the step's best, the abort)."""

    delta: torch.Tensor
    adam_m: torch.Tensor
    adam_v: torch.Tensor
    score: torch.Tensor
    l2sq: torch.Tensor
    success: torch.Tensor
    active: torch.Tensor
    prev: torch.Tensor
    last_loss: torch.Tensor
    ran: torch.Tensor
    improved_at: torch.Tensor  # the iteration at which the step's best iterate last changed
    prev_batch: float = float("inf")

    @classmethod
    def new(cls, like: torch.Tensor) -> _StepState:
        b, dev = like.shape[0], like.device
        f64: dict[str, Any] = dict(dtype=torch.float64, device=dev)
        return cls(delta=torch.zeros_like(like), adam_m=torch.zeros_like(like), adam_v=torch.zeros_like(like),
                   score=torch.full((b,), float("-inf"), **f64), l2sq=torch.full((b,), float("inf"), **f64),
                   success=torch.zeros(b, dtype=torch.bool, device=dev),
                   active=torch.ones(b, dtype=torch.bool, device=dev), prev=torch.full((b,), float("inf"), **f64),
                   last_loss=torch.full((b,), float("nan"), **f64), ran=torch.zeros(b, dtype=torch.long, device=dev),
                   improved_at=torch.zeros(b, dtype=torch.long, device=dev))


@dataclass
class _Running:
    """The images of a binary step that still run (``idx``, into the batch) and their tensors.

    While every image runs (``whole``) these are the batch's own tensors, updated in place; when
    some stop at a stall check, :meth:`take` copies the rest's out once, and the loop goes on in
    place on those copies (gathering them by index at every iteration cost ~10 % of the time).
    Adam's state and delta live only for the step, so nothing needs writing back.
    """

    idx: torch.Tensor
    whole: bool
    delta: torch.Tensor
    adam_m: torch.Tensor
    adam_v: torch.Tensor
    w0: torch.Tensor
    x_ref: torch.Tensor
    c: torch.Tensor
    sets: TargetSets

    @classmethod
    def of(cls, st: _CWState, ss: _StepState, idx: torch.Tensor | None = None) -> _Running:
        """Every image of the batch, on its tensors; or the images ``idx``, gathered (copies)."""
        if idx is None:
            return cls(torch.arange(ss.active.numel(), device=ss.active.device), True, ss.delta, ss.adam_m,
                       ss.adam_v, st.w0, st.x_ref, st.c, st.sets)
        return cls(idx, False, ss.delta[idx], ss.adam_m[idx], ss.adam_v[idx], st.w0[idx], st.x_ref[idx], st.c[idx],
                   st.sets.take(idx))

    def take(self, keep: torch.Tensor) -> _Running:
        """The images ``keep`` (a mask or indices into these) on copies of their tensors."""
        return _Running(self.idx[keep], False, self.delta[keep], self.adam_m[keep], self.adam_v[keep], self.w0[keep],
                        self.x_ref[keep], self.c[keep], self.sets.take(keep))

    def write_back(self, ss: _StepState) -> None:
        """The gathered path: Adam's state and delta back into the step's tensors."""
        ss.delta[self.idx], ss.adam_m[self.idx], ss.adam_v[self.idx] = self.delta, self.adam_m, self.adam_v
