"""The one interface every attack implements, and the result every attack returns.

``Attack.__call__`` does the common work once (checks, eval mode, device, timing, the final
re-check of success on a forward pass of the returned images, moving results to the CPU; while
it runs, the model's parameters frozen and freed memory kept for reuse); each attack implements
only ``_run``. Success is never taken on the attack's word: it is what the model says about the
returned images at the attack's threshold (a no-grad pass the attack already made on exactly
those images, as one whole batch, is that same pass: it is reused, not repeated). Nor are the
model's outputs: on the images to attack they must be finite (in [0,1] where the model declares
probabilities), or the call raises :class:`~mlalp_core.errors.InvalidInputError` naming the model,
the example and the problem before any work (:mod:`mlalp_core.models.outputs`; an attack whose
first forward pass is on those images checks them there, before its first step).
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..allocator import reuse_freed_memory
from ..device import DeviceLike, resolve_device
from ..errors import InvalidInputError
from ..models.base import MultiLabelClassifier, frozen_parameters, prepare_image_batch
from ..models.outputs import checked_probabilities, model_name, output_problems
from ..progress import ProgressFn
from .schema import Schema, Setting

#: The decision threshold is the model's (0.5 in the paper) unless an attack is given another.
THRESHOLD = Setting("threshold", float, 0.5, "a label is predicted when its probability is at least this",
                    low=0.0, high=1.0, low_open=True, high_open=True)


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Views of the same memory with the same layout: the same values, without comparing them
    (a detached result is another tensor object over the checked images)."""
    return (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype and a.device == b.device)


class AttackCancelled(Exception):
    """Raised from a progress callback to stop an attack early."""


@dataclass
class AttackRun:
    """What ``_run`` hands back; the base class completes it into an :class:`AttackResult`."""

    x_adv: torch.Tensor
    iterations: torch.Tensor  # (B,) long
    model_calls: torch.Tensor  # (B,) long: forward + backward passes spent on each example
    trace: list[list[dict[str, Any]]]  # per example, one dict per iteration
    elapsed_s: torch.Tensor | None = None  # (B,) seconds, when the attack measures per example
    #: (B, l) the model's outputs on x, when the attack's first forward pass (the whole batch, on x) gave them
    probs_clean: torch.Tensor | None = None
    #: (images, network outputs) of a no-grad forward pass on a whole batch: the re-check reuses it when
    #: the images are, bit for bit, the returned ones (the same pass on the same batch)
    checked: tuple[torch.Tensor, torch.Tensor] | None = None
    #: every returned image is, by construction, a clip to [0,1] or a clean image (the attack's
    #: tests hold it to that): the base class skips its range pass over them
    in_unit_cube: bool = False


@dataclass
class AttackResult:
    """Per-example outcome of one attack on a batch. Tensors live on the CPU; pixels in [0,1]."""

    attack: str
    params: dict[str, Any]
    threshold: float
    x: torch.Tensor  # (B, 3, H, W) clean images
    x_adv: torch.Tensor  # (B, 3, H, W) adversarial images, in [0,1]
    target: torch.Tensor  # (B, l) bool: y*, True = label should be predicted
    probs_clean: torch.Tensor  # (B, l)
    probs_adv: torch.Tensor  # (B, l)
    success: torch.Tensor  # (B,) bool: every label at the threshold equals y*
    iterations: torch.Tensor  # (B,) long
    model_calls: torch.Tensor  # (B,) long
    elapsed_s: torch.Tensor  # (B,) seconds
    trace: list[list[dict[str, Any]]] = field(default_factory=list)
    #: stopped before it finished (a Stop in the app): the best iterates found so far
    stopped: bool = False
    #: per example, what was returned and why when the target was not reached ("" on success)
    notes: list[str] = field(default_factory=list)

    @property
    def perturbation(self) -> torch.Tensor:
        """r = x_adv - x, in [0,1] pixel units."""
        return self.x_adv - self.x

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])

    def select(self, index: int | slice | torch.Tensor) -> AttackResult:
        """The result restricted to some examples (keeps the batch dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        idx = index
        pick = (lambda t: t[idx])
        if isinstance(idx, slice):
            trace = self.trace[idx]
        else:
            ids = torch.as_tensor(idx)
            ids = ids.nonzero().flatten() if ids.dtype == torch.bool else ids.flatten()
            trace = [self.trace[i] for i in ids.tolist()]
        return AttackResult(
            attack=self.attack, params=dict(self.params), threshold=self.threshold,
            x=pick(self.x), x_adv=pick(self.x_adv), target=pick(self.target),
            probs_clean=pick(self.probs_clean), probs_adv=pick(self.probs_adv),
            success=pick(self.success), iterations=pick(self.iterations),
            model_calls=pick(self.model_calls), elapsed_s=pick(self.elapsed_s), trace=trace, stopped=self.stopped,
            notes=[self.notes[i] for i in (range(len(self.trace))[idx] if isinstance(idx, slice) else ids.tolist())]
            if self.notes else [],
        )


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def success_mask(probs: torch.Tensor, target: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B,) True where every label thresholded at ``threshold`` equals the target."""
    return ((probs >= threshold) == target.bool()).all(dim=1)


def check_target(target: torch.Tensor, batch: int, num_labels: int) -> torch.Tensor:
    """Validate y* and return it as a bool tensor (B, l); accepts {0,1}, {-1,+1} or bool."""
    if not isinstance(target, torch.Tensor):
        target = torch.as_tensor(target)
    if target.shape != (batch, num_labels):
        raise InvalidInputError(f"target must have shape ({batch}, {num_labels}), got {tuple(target.shape)}")
    if target.dtype == torch.bool:
        return target
    vals = set(torch.unique(target).tolist())
    if vals <= {0, 1}:
        return target > 0
    if vals <= {-1, 1}:
        return target > 0
    raise InvalidInputError(f"target values must be bool, {{0,1}} or {{-1,+1}}, got {sorted(vals)}")


class Attack(ABC):
    """Base class of the attacks.

    Subclasses declare ``name`` and their settings once, as a :class:`~.schema.Schema` in
    ``schema`` (names, types, ranges, the paper's defaults, help). ``__init__`` parses the keyword
    settings through it (so an attack never holds a value of the wrong type), stores them as
    attributes, lets ``_check_params`` refuse combinations, and ``_run`` does the work on a batch
    already on the right device.
    """

    name: ClassVar[str] = "attack"
    #: as the paper writes it (figures, tables, the app)
    display_name: ClassVar[str] = "attack"
    schema: ClassVar[Schema] = Schema("attack", ())
    #: settings that ``mode="authors"`` fixes (the authors' code had no choice there)
    authors_fixes: ClassVar[dict[str, Any]] = {}
    #: images per batch in the authors' runs (their results depend on it); None: not batch-bound
    authors_batch: ClassVar[int | None] = None
    #: the distance the attack minimises or bounds ("l2" or "linf"): Table III groups by it
    norm: ClassVar[str] = "l2"
    #: run the model with its parameters not requiring grad (:func:`~..models.base.frozen_parameters`)
    #: and freed memory kept for reuse (:func:`~..allocator.reuse_freed_memory`); False: as before both
    frozen_model: ClassVar[bool] = True
    keep_freed_memory: ClassVar[bool] = True
    #: the revision of the attack's arithmetic, recorded with every stored run (its numerics): raise
    #: it with any change that moves a bit of the attack's numbers, so a resumed run is never
    #: finished by code that computes otherwise (the store starts a run of its own, with a note)
    arithmetic: ClassVar[int] = 1

    @classmethod
    def target_problem(cls, target: torch.Tensor) -> str:
        """Why this attack cannot pursue the target y* (one row, bool), or "" when it can."""
        return ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The class's attribute annotations (for type checkers) must say what its schema says."""
        super().__init_subclass__(**kwargs)
        if "schema" not in cls.__dict__:
            return
        hints: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            hints.update({k: str(v) for k, v in getattr(klass, "__annotations__", {}).items()})
        for s in cls.schema:
            want = s.kind.__name__ + (" | None" if s.none_means else "")
            if hints.get(s.name) != want:
                raise TypeError(f"{cls.__name__}: annotate the setting {s.name} as {want!r} (found {hints.get(s.name)!r})")

    def __init__(self, model: MultiLabelClassifier, *, threshold: float | None = None,
                 device: DeviceLike = None, **settings: Any) -> None:
        self.model = model
        self.threshold = THRESHOLD.parse(model.threshold if threshold is None else threshold, self.name)
        self.settings = self.schema.parse(settings, self.name)
        if self.settings.get("mode") == "authors":
            for key, value in self.authors_fixes.items():
                if key in settings and self.settings[key] != value:
                    raise InvalidInputError(
                        f"{self.name}: mode=authors fixes {key}={_text(value)} (the authors' code); leave {key} "
                        "out, or use mode=mlalp")
                self.settings[key] = value
        for key, value in self.settings.items():
            setattr(self, key, value)
        self.device = resolve_device(device)
        self._check_params()

    #: what the outputs' messages call the images of the batch being attacked (set by ``__call__``)
    _images: Sequence[str] | None = None

    # ---- to implement ------------------------------------------------------------------------
    def _check_params(self) -> None:
        """Raise InvalidInputError for settings that are valid alone but not together."""

    def _checks_clean_outputs(self) -> bool:
        """True: ``_run``'s first forward pass is on the clean images, the whole batch; it checks
        the model's outputs there before any step (:func:`~..models.outputs.check_outputs` with
        ``self._images``) and returns their probabilities as ``AttackRun.probs_clean``, so the
        base class makes no clean pass of its own."""
        return False

    @classmethod
    def run_name(cls, settings: dict[str, Any]) -> tuple[str, set[str]]:
        """The name a run with these settings goes by in tables, and the settings that name already
        says (left out of its list of differences from the paper's). Default: the display name."""
        return cls.display_name, set()

    def config(self) -> dict[str, Any]:
        """The attack's settings (stored with every result, part of a run's identity), typed by the
        schema; those the other settings make no use of (:attr:`~.schema.Setting.used_when`) are
        left out: two runs that differ only there compute the same numbers, and are one run."""
        unused = self.schema.unused(self.settings)
        return {"threshold": self.threshold, **{k: v for k, v in self.settings.items() if k not in unused}}

    @abstractmethod
    def _run(self, x: torch.Tensor, target: torch.Tensor, progress: ProgressFn | None) -> AttackRun:
        """Attack images ``x`` (B,3,H,W) in [0,1] towards bool targets ``target`` (B,l). Report with
        :meth:`_report`; when it returns False, stop and return the best iterates found so far."""

    def _outcome(self, i: int, success: bool, wrong: int, unmoved: bool, trace: list[dict[str, Any]]) -> str:
        """What the attack returns for an example that did not reach y*, and why (one line).
        ``wrong``: its labels on the wrong side; ``unmoved``: it returns the clean image."""
        if success:
            return ""
        parts = [f"target not reached ({wrong} label(s) wrong)"]
        if unmoved:
            parts.append("no iterate had more labels right than the clean image, so it returns the clean image "
                         "(r = 0)")
        else:
            parts.append("it returns its best iterate")
        stop = trace[-1].get("stop") if trace else None
        if stop:
            parts.append(f"it stopped on: {stop}")
        detail = self._failure_detail(trace)
        return "; ".join(parts + ([detail] if detail else [])) + "."

    def _failure_detail(self, trace: list[dict[str, Any]]) -> str:
        """An attack's own reason for a failure, from its trace ("" when there is nothing to add)."""
        return ""

    def _report(self, progress: ProgressFn | None, done: int, total: int, message: str) -> bool:
        """Progress for the caller, who may ask to stop by raising :class:`AttackCancelled`: then
        False (the attack returns what it has; the result says ``stopped``)."""
        if progress is None:
            return True
        try:
            progress(done, total, message)
        except AttackCancelled:
            self._stopped = True
            return False
        return True

    # ---- common work -------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, target: torch.Tensor, *, progress: ProgressFn | None = None,
                 example_ids: Sequence[str] | None = None) -> AttackResult:
        """Attack the batch ``x`` towards ``target``. Before any work the model's outputs on the
        images are checked (finite; in [0,1] where the model declares probabilities): an image
        where they are not raises :class:`~mlalp_core.errors.InvalidInputError`, one line naming
        the model, the example (``example_ids``, else its place in the batch) and the problem, and
        nothing of the batch is attacked (an attack of a broken output would only mislead). A
        returned image on which the outputs break says so in its note."""
        x_dev = prepare_image_batch(x, self.model.input_size, self.device)  # checked; a copy of its own
        target = check_target(target, x.shape[0], self.model.num_labels)
        model = self.model
        # one walk over the modules for the three checks (parameters() and eval() walk them again,
        # slowly: ~0.2 ms a call, a few % of an FGSM call on the demo)
        modules = list(model.modules())
        tensors = [t for m in modules for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
        if any(t.is_meta for t in tensors):
            raise InvalidInputError(f"model {model_name(model)} is on the meta device (shapes without weights): "
                                    "load its weights before attacking it")
        if any(t.device != self.device for t in tensors):
            model = model.to(self.device)  # (a walk over every module: ~1 ms a call, only when needed)
        if any(m.training for m in modules):
            model = model.eval()
        t_dev = target.to(self.device)
        images = [f"example {e}" for e in example_ids] if example_ids is not None else None
        with (frozen_parameters(model) if self.frozen_model else contextlib.nullcontext(),
              reuse_freed_memory(self.keep_freed_memory)):
            t0 = time.perf_counter()
            # the outputs on the clean images are checked before any work: here, or by an attack
            # whose first forward pass is on them (it checks them there, before its first step)
            self._images = images
            probs_clean = None if self._checks_clean_outputs() else checked_probabilities(model, x_dev, images)
            self._stopped = False
            run = self._run(x_dev, t_dev, progress)
            if probs_clean is None:
                probs_clean = (run.probs_clean if run.probs_clean is not None
                               else checked_probabilities(model, x_dev, images))
            x_adv = run.x_adv.detach()
            clamped = False
            if not run.in_unit_cube and x_adv.numel():
                lo, hi = torch.aminmax(x_adv)
                clamped = not (0.0 <= float(lo) and float(hi) <= 1.0)
            if clamped:
                x_adv = x_adv.clamp(0.0, 1.0)  # (else the clamp would copy them unchanged)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            wall = time.perf_counter() - t0
            if run.checked is not None and not clamped and (_same_memory(run.checked[0], x_adv)
                                                            or torch.equal(run.checked[0], x_adv)):
                outputs_adv = run.checked[1]  # that pass on these very images, as one batch
            else:
                with torch.no_grad():
                    outputs_adv = model.network_outputs(x_adv)
            probs_adv = model.probabilities_from_outputs(outputs_adv)
        b = x.shape[0]
        elapsed = run.elapsed_s if run.elapsed_s is not None else torch.full((b,), wall / max(b, 1))
        broken = output_problems(outputs_adv, model.output_kind, model.num_labels)
        wrong_t = ((probs_adv >= self.threshold) != t_dev).sum(1).cpu()  # labels on the wrong side, per example
        success = wrong_t == 0  # every label at the threshold equals y* (success_mask)
        if any(broken):  # outputs that are not finite (or not probabilities) say nothing: never a success
            success &= torch.tensor([not p for p in broken])
        wrong, reached = wrong_t.tolist(), success.tolist()
        # (only failures get a note: one early-exit comparison per failure, not a pass over the batch)
        unmoved = [False] * b
        if not all(reached):
            rows_adv, rows_x = x_adv.unbind(0), x_dev.unbind(0)  # (views in one call, not two per row)
            unmoved = [not ok and torch.equal(rows_adv[i], rows_x[i]) for i, ok in enumerate(reached)]
        notes = ["" if reached[i] else self._outcome(i, False, wrong[i], unmoved[i], run.trace[i]) for i in range(b)]
        notes = ["; ".join(filter(None, [f"the model's output on the returned image {broken[i]}", note])) if broken[i]
                 else note for i, note in enumerate(notes)]
        for i, note in enumerate(notes):
            if note and run.trace[i]:
                run.trace[i][-1]["outcome"] = note  # kept with the trace in the results store
        return AttackResult(
            attack=self.name,
            params=self.config(),
            threshold=self.threshold,
            x=x_dev.cpu(),
            x_adv=x_adv.cpu(),
            target=target.cpu(),
            probs_clean=probs_clean.cpu(),
            probs_adv=probs_adv.cpu(),
            success=success,
            iterations=run.iterations.cpu().long(),
            model_calls=run.model_calls.cpu().long(),
            elapsed_s=elapsed.cpu().double(),
            trace=run.trace,
            stopped=self._stopped,
            notes=notes,
        )
