"""The multi-label classifier contract every model in mlalp meets.

A classifier takes images in [0,1] of shape (B, 3, H, W) at its declared ``input_size``,
normalises them itself, and returns per-label logits; probabilities are their sigmoid. It carries
its label names and decision threshold, so attacks, metrics and the app need nothing else to use
it. Attacks differentiate through ``forward`` with respect to the [0,1] pixels.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import InvalidInputError

#: Tolerance on the [0,1] range check: values a round trip through normalisation can produce.
RANGE_TOLERANCE = 1e-4
#: Networks that output probabilities are turned into logits with this clamp (attacks
#: differentiate the logits).
PROB_EPS = 1e-6


class MultiLabelClassifier(nn.Module):
    """Base class: subclasses implement :meth:`classify` on normalised images.

    Parameters
    ----------
    label_names: names of the l labels, in output order.
    input_size: (H, W) the model expects.
    mean, std: per-channel normalisation applied inside :meth:`forward`.
    threshold: a label is predicted positive when its probability is >= threshold.
    """

    #: buffers (declared for type checkers: nn.Module types attributes as Tensor | Module)
    norm_mean: torch.Tensor
    norm_std: torch.Tensor
    #: the name the registry loaded it under ("" for a model built by hand)
    registry_name: str = ""
    #: what the network behind :meth:`classify` returns: "logits", or "probabilities" (which
    #: :meth:`classify` turns into logits, clamped at :data:`PROB_EPS`)
    output_kind: str = "logits"

    def __init__(
        self,
        label_names: Sequence[str],
        input_size: tuple[int, int],
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if len(label_names) == 0:
            raise InvalidInputError("a classifier needs at least one label name")
        if len(set(label_names)) != len(label_names):
            raise InvalidInputError(f"label names must be unique, got {list(label_names)}")
        if not 0.0 < threshold < 1.0:
            raise InvalidInputError(f"threshold must lie in (0, 1), got {threshold}")
        self.label_names: tuple[str, ...] = tuple(str(n) for n in label_names)
        self.input_size: tuple[int, int] = (int(input_size[0]), int(input_size[1]))
        self.threshold: float = float(threshold)
        # Non-persistent: checkpoints of the published models do not contain them.
        self.register_buffer("norm_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("norm_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    # ---- the contract ------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def num_pixels(self) -> int:
        """d: the dimension of the attack's search space."""
        return 3 * self.input_size[0] * self.input_size[1]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.norm_mean) / self.norm_std

    def classify(self, x_normalized: torch.Tensor) -> torch.Tensor:
        """Logits (B, l) from normalised images. Subclasses implement this."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, l) from images in [0,1] of shape (B, 3, H, W)."""
        return self.classify(self.normalize(x))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward(x))

    def network_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The network's own outputs on images in [0,1], as it returns them (logits, or declared
        probabilities before any clamp): what :mod:`~mlalp_core.models.outputs` checks."""
        return self.forward(x)

    def probabilities_from_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """:meth:`probabilities` from :meth:`network_outputs` (the same numbers, no second pass)."""
        if self.output_kind == "probabilities":
            return torch.sigmoid(torch.logit(outputs, eps=PROB_EPS))
        return torch.sigmoid(outputs)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean predictions (B, l) at the model's threshold."""
        return self.probabilities(x) >= self.threshold

    # ---- helpers -----------------------------------------------------------------------------
    def describe(self) -> dict:
        """A small summary for listings and ``mlalp check-model``."""
        return {
            "class": type(self).__name__,
            "labels": list(self.label_names),
            "num_labels": self.num_labels,
            "input_size": list(self.input_size),
            "threshold": self.threshold,
            "parameters": sum(p.numel() for p in self.parameters()),
        }


def prepare_image_batch(x: torch.Tensor, input_size: tuple[int, int] | None,
                        device: torch.device) -> torch.Tensor:
    """A batch of [0,1] images (B, 3, H, W) validated (a tolerance for round-off), as a float32
    copy of its own on ``device`` with that round-off clipped. The values are checked on the copy
    (the same numbers, read from cache right after the copy, not once more from memory before it)."""
    _check_batch_shape(x, input_size)
    x_dev = x.detach().to(device, torch.float32, copy=True)
    lo, hi = _check_values(x_dev)
    if lo < 0.0 or hi > 1.0:
        x_dev.clamp_(0.0, 1.0)
    return x_dev


def _check_batch_shape(x: torch.Tensor, input_size: tuple[int, int] | None) -> None:
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise InvalidInputError(f"images must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InvalidInputError("the batch holds no image (B = 0): pass at least one")
    if x.device.type == "meta":
        raise InvalidInputError("images are on the meta device (shapes without pixels): pass images that hold data "
                                "(on the CPU or a GPU)")
    if input_size is not None and tuple(x.shape[2:]) != tuple(input_size):
        raise InvalidInputError(
            f"images are {x.shape[2]}x{x.shape[3]} but the model expects "
            f"{input_size[0]}x{input_size[1]}: resize them first (mlalp_core.data.images)"
        )
    if not torch.is_floating_point(x):
        raise InvalidInputError(f"images must be floating point in [0,1], got dtype {x.dtype}")


def _check_values(x: torch.Tensor) -> tuple[float, float]:
    """The smallest and largest value, refused outside [0,1] beyond the round-off tolerance."""
    if not x.numel():
        return 0.0, 0.0
    lo_t, hi_t = torch.aminmax(x)  # one pass; a NaN anywhere makes both NaN
    lo, hi = float(lo_t), float(hi_t)
    if not (-RANGE_TOLERANCE <= lo and hi <= 1 + RANGE_TOLERANCE):
        raise InvalidInputError(
            f"images must lie in [0,1] (pixels divided by 255), got values in [{lo:.4g}, {hi:.4g}]"
        )
    return lo, hi


_freeze_lock = threading.Lock()
#: model -> (blocks inside frozen_parameters, the parameters they turned off)
_frozen: weakref.WeakKeyDictionary[nn.Module, tuple[int, list[nn.Parameter]]] = weakref.WeakKeyDictionary()


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Run the block with no parameter of ``model`` requiring grad; those that did, do again after.

    Attacks differentiate with respect to the images only. With the parameters frozen, autograd
    records nothing towards them, and a model may reuse what does not depend on the image
    (:meth:`~mlalp_core.models.gcn.GCNClassifier.cached_label_classifiers`, which it must not do
    while gradients could flow to its parameters). Input gradients are the same. Nested and
    concurrent blocks on one model (the app shares a loaded model between sessions) are counted:
    the flags come back when the last one ends. Training the same model in another thread at the
    same time would see them off.
    """
    with _freeze_lock:
        depth, params = _frozen.get(model, (0, []))
        if depth == 0:
            params = [p for p in model.parameters() if p.requires_grad]
            for p in params:
                p.requires_grad_(False)
        _frozen[model] = (depth + 1, params)
    try:
        yield
    finally:
        with _freeze_lock:
            depth, params = _frozen.pop(model)
            if depth > 1:
                _frozen[model] = (depth - 1, params)
            else:
                for p in params:
                    p.requires_grad_(True)
