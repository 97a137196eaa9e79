"""Building the target label vectors y* for a batch.

Targets are bool tensors (B, l): True means the label must be predicted positive after the
attack. The paper's setting is :func:`hide_one`: one ground-truth positive label, chosen
uniformly at random with a seed, is flipped to negative; every other label keeps its ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import InvalidInputError


def _as_bool_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, l) bool labels from a tensor or array of 0/1 (or bool) values, else one line saying what
    was given (a list of label names is a common slip: targets are built from label VALUES)."""
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        shown = repr(labels) if len(repr(labels)) <= 60 else repr(labels)[:57] + "..."
        raise InvalidInputError(f"labels must be a (B, l) tensor of 0/1 (or bool) values, e.g. model.predict(images); "
                                f"got {shown}") from None
    if not (labels.dtype == torch.bool or labels.is_floating_point() or labels.dtype in (
            torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise InvalidInputError(f"labels must be 0/1 (or bool) values, got dtype {labels.dtype}")
    if labels.dim() == 1:
        labels = labels[None]
    if labels.dim() != 2:
        raise InvalidInputError(f"labels must be (B, l), got shape {tuple(labels.shape)}")
    return labels > 0 if labels.dtype != torch.bool else labels


def _indices(names_or_ids: Sequence[str | int], label_names: Sequence[str] | None, l: int) -> list[int]:
    out = []
    for item in names_or_ids:
        if isinstance(item, str):
            if label_names is None or item not in label_names:
                raise InvalidInputError(f"unknown label {item!r}; known labels: {list(label_names or [])}")
            out.append(list(label_names).index(item))
        else:
            j = int(item)
            if not 0 <= j < l:
                raise InvalidInputError(f"label index {j} is out of range 0..{l - 1}")
            out.append(j)
    return out


def hide_one(labels: torch.Tensor, seed: int = 0, example_ids: Sequence[int] | None = None) -> torch.Tensor:
    """Flip one positive label per example, chosen at random (the paper's setting).

    The choice for each example depends only on ``seed`` and that example's id (its position by
    default), so a batch split across processes or resumed later gets the same targets.
    """
    y = _as_bool_labels(labels)
    if example_ids is None:
        example_ids = range(y.shape[0])
    target = y.clone()
    for row, ex_id in enumerate(example_ids):
        pos = y[row].nonzero().flatten()
        if len(pos) == 0:
            raise InvalidInputError(f"example {ex_id} has no positive label to hide")
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(ex_id)) % (2**63 - 1))
        j = int(pos[torch.randint(len(pos), (1,), generator=g)].item())
        target[row, j] = False
    return target


def _flip(labels: torch.Tensor, which: Sequence[str | int], label_names: Sequence[str] | None, to: bool) -> torch.Tensor:
    y = _as_bool_labels(labels)
    idx = _indices(which, label_names, y.shape[1])
    verb, state = ("add", "already present") if to else ("hide", "not present")
    if not idx:
        raise InvalidInputError(f"choose at least one label to {verb}")
    for j in idx:
        if (y[:, j] if to else ~y[:, j]).any():
            name = label_names[j] if label_names else j
            raise InvalidInputError(f"label {name!r} is {state}, so it cannot be {'added' if to else 'hidden'}")
    target = y.clone()
    target[:, idx] = to
    return target


def hide(labels: torch.Tensor, which: Sequence[str | int], label_names: Sequence[str] | None = None) -> torch.Tensor:
    """Flip the chosen labels to negative; each must be positive in every example."""
    return _flip(labels, which, label_names, False)


def add(labels: torch.Tensor, which: Sequence[str | int], label_names: Sequence[str] | None = None) -> torch.Tensor:
    """Flip the chosen labels to positive; each must be negative in every example."""
    return _flip(labels, which, label_names, True)


def custom(labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A full target vector; it must differ from the labels in at least one place per example."""
    y = _as_bool_labels(labels)
    t = _as_bool_labels(target)
    if t.shape[1] != y.shape[1]:
        raise InvalidInputError(f"target has {t.shape[1]} labels, the model has {y.shape[1]}")
    if t.shape[0] == 1 and y.shape[0] > 1:
        t = t.expand_as(y)
    if t.shape != y.shape:
        raise InvalidInputError(f"target shape {tuple(t.shape)} does not match labels {tuple(y.shape)}")
    same = (t == y).all(dim=1)
    if same.any():
        raise InvalidInputError(
            f"the target equals the current labels for {int(same.sum())} example(s): nothing to attack"
        )
    return t.clone()


def flipped(labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, l) bool: the labels the attack must change."""
    return _as_bool_labels(labels) != _as_bool_labels(target)


def hide_all(labels: torch.Tensor) -> torch.Tensor:
    """Every positive label to negative (nothing predicted after the attack)."""
    y = _as_bool_labels(labels)
    empty = ~y.any(1)
    if bool(empty.any()):
        raise InvalidInputError(f"{int(empty.sum())} example(s) have no positive label to hide")
    return torch.zeros_like(y)


def show_k(labels: torch.Tensor, k: int, seed: int = 0, example_ids: Sequence[int] | None = None) -> torch.Tensor:
    """Add k absent labels per example, chosen at random (seeded per example, like hide_one);
    every other label keeps its value. The "show k labels" scenario of the showing-many study."""
    y = _as_bool_labels(labels)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    ids = range(y.shape[0]) if example_ids is None else example_ids
    target = y.clone()
    for row, ex_id in enumerate(ids):
        neg = (~y[row]).nonzero().flatten()
        if len(neg) < k:
            raise InvalidInputError(f"example {ex_id} has {len(neg)} absent label(s), fewer than k = {k}")
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(ex_id) + 7919 * k) % (2**63 - 1))
        pick = neg[torch.randperm(len(neg), generator=g)[:k]]
        target[row, pick] = True
    return target


def show_many(labels: torch.Tensor) -> torch.Tensor:
    """Every label positive: show as many labels as possible (scored by how many are shown)."""
    y = _as_bool_labels(labels)
    full = y.all(1)
    if bool(full.any()):
        raise InvalidInputError(f"{int(full.sum())} example(s) already show every label")
    return torch.ones_like(y)


#: The objectives, by the name the command line, the runner and the store use.
OBJECTIVES: dict[str, str] = {
    "hide-one": "hide one predicted label, chosen at random (the paper's)",
    "hide-all": "hide every predicted label",
    "hide": "hide chosen labels (hide:dog,cat)",
    "add": "add chosen labels (add:person)",
    "show-k": "show k more labels, chosen at random (show-k:2)",
    "show-many": "show as many labels as possible: every label as the target, scored by labels shown",
}


def parse_objective(text: str, label_names: Sequence[str] | None = None) -> tuple[str, Any]:
    """``name`` or ``name:argument`` as (name, argument): show-k takes k, hide/add take label names."""
    name, _, arg = str(text).strip().partition(":")
    name = name.strip().lower()
    if name not in OBJECTIVES:
        raise InvalidInputError(f"unknown objective {text!r}; choose one of {', '.join(OBJECTIVES)}")
    if name == "show-k":
        if not arg.strip().isdigit() or int(arg) < 1:
            raise InvalidInputError(f"show-k takes a positive number of labels, e.g. show-k:2, got {text!r}")
        return name, int(arg)
    if name in ("hide", "add"):
        labels = [a.strip() for a in arg.split(",") if a.strip()]
        if not labels:
            raise InvalidInputError(f"{name} takes label names, e.g. {name}:dog,cat, got {text!r}")
        if label_names is not None:
            unknown = [n for n in labels if n not in label_names]
            if unknown:
                raise InvalidInputError(f"unknown label(s) {', '.join(unknown)} in {text!r}")
        return name, tuple(labels)
    if arg:
        raise InvalidInputError(f"{name} takes no argument, got {text!r}")
    return name, None


def build_target(objective: str, labels: torch.Tensor, *, seed: int = 0, example_ids: Sequence[int] | None = None,
                 label_names: Sequence[str] | None = None) -> torch.Tensor:
    """y* for an objective (see :data:`OBJECTIVES`) from the labels the model predicts."""
    name, arg = parse_objective(objective, label_names)
    if name == "hide-one":
        return hide_one(labels, seed=seed, example_ids=example_ids)
    if name == "hide-all":
        return hide_all(labels)
    if name == "show-k":
        return show_k(labels, arg, seed=seed, example_ids=example_ids)
    if name == "show-many":
        return show_many(labels)
    return (hide if name == "hide" else add)(labels, list(arg), label_names)
