"""Any ``nn.Module`` as an mlalp classifier, from Python: no file, no manifest.

``wrap(net, labels=[...], input_size=(H, W), mean=..., std=...)`` gives a
:class:`~mlalp_core.models.base.MultiLabelClassifier` (pixels in [0,1], normalisation inside,
logits and probabilities, the label names) that every attack and the batch runner accept; with
:func:`register` it is also known by name to ``load_model``, ``mlalp_core.experiments`` and an app
started in the same Python process. It is checked once, on a blank image and a few gallery scenes (finite outputs, in [0,1] for
probabilities).

Example::

    import torchvision, mlalp_core as ml
    net = torchvision.models.resnet18(num_classes=20)            # your trained multi-label net
    model = ml.wrap(net, labels=VOC_CLASSES, input_size=224,
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    result = ml.attack("mla-lp", model, images, ml.hide_one(labels))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..errors import InvalidInputError, exception_line
from .base import PROB_EPS, MultiLabelClassifier
from .outputs import check_outputs, probe_images


def _triple(value: Sequence[float], what: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be 3 numbers (one per RGB channel), got {value!r}") from None
    if len(out) != 3 or not all(abs(v) < float("inf") for v in out):
        raise InvalidInputError(f"{what} must be 3 finite numbers (one per RGB channel), got {value!r}")
    return out


class WrappedModel(MultiLabelClassifier):
    """A Python network in the classifier contract; ``output`` says what it returns."""

    def __init__(self, net: nn.Module, labels: Sequence[str], input_size: tuple[int, int],
                 mean: Sequence[float], std: Sequence[float], threshold: float,
                 output: Literal["logits", "probabilities"], name: str) -> None:
        super().__init__(labels, input_size, mean, std, threshold)
        self.net = net
        self.output_kind = output
        self.registry_name = name
        self.source = f"Python module {type(net).__name__}"

    def _raw(self, x_normalized: torch.Tensor) -> torch.Tensor:
        out = self.net(x_normalized)
        if not isinstance(out, torch.Tensor):
            raise InvalidInputError(f"{self.registry_name}: the network returned {type(out).__name__}, not a tensor "
                                    "of shape (B, labels); wrap a module that returns one")
        return out

    def classify(self, x_normalized: torch.Tensor) -> torch.Tensor:
        out = self._raw(x_normalized)
        return torch.logit(out, eps=PROB_EPS) if self.output_kind == "probabilities" else out

    def network_outputs(self, x: torch.Tensor) -> torch.Tensor:
        return self._raw(self.normalize(x))

    def describe(self) -> dict:
        info = super().describe()
        info.update(model=f"wrapped {type(self.net).__name__} ({self.output_kind})")
        return info


def wrap(net: nn.Module, *, labels: Sequence[str], input_size: int | tuple[int, int],
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None, threshold: float = 0.5,
         output: Literal["logits", "probabilities"] = "logits", name: str = "wrapped") -> WrappedModel:
    """``net`` (taking normalised images, returning (B, len(labels))) as an mlalp classifier.

    ``mean``/``std``: the normalisation the network was trained with, applied inside (leave both
    out when the network takes [0,1] pixels itself). ``input_size``: (H, W) or one side.
    """
    if not isinstance(net, nn.Module):
        raise InvalidInputError(f"wrap takes a torch.nn.Module, got {type(net).__name__}")
    if isinstance(labels, str) or not all(isinstance(n, str) and n for n in labels):
        raise InvalidInputError("labels must be a list of label names (strings), one per output, in order")
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in size):
        raise InvalidInputError(f"input_size must be (H, W) or one side, integers in 8..4096, got {input_size!r}")
    if (mean is None) != (std is None):
        raise InvalidInputError("give both mean and std, or neither (the network then takes [0,1] pixels)")
    m = _triple(mean, "mean") if mean is not None else (0.0, 0.0, 0.0)
    s = _triple(std, "std") if std is not None else (1.0, 1.0, 1.0)
    if min(s) <= 0:
        raise InvalidInputError(f"std must be positive, got {std!r}")
    if output not in ("logits", "probabilities"):
        raise InvalidInputError(f"output must be 'logits' or 'probabilities', got {output!r}")
    model = WrappedModel(net, labels, size, m, s, threshold, output, name).eval()
    try:
        device = next(net.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    blank = torch.full((1, 3, *size), 0.5, device=device)
    with torch.no_grad():
        try:
            out = net(model.to(device).normalize(blank))
        except Exception as exc:  # noqa: BLE001 - any way a user's network can fail on a valid input
            raise InvalidInputError(f"{name}: the network fails on a blank {size[0]}x{size[1]} image: "
                                    f"{exception_line(exc, last=True)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, len(labels)):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidInputError(f"{name}: on a blank {size[0]}x{size[1]} image the network returned {got}, "
                                f"expected (1, {len(labels)}): one output per label")
    if not torch.isfinite(out).all():
        raise InvalidInputError(f"{name}: the network's output on a blank image is not finite")
    if output == "probabilities" and (out.min() < 0 or out.max() > 1):
        raise InvalidInputError(f"{name}: output='probabilities' but the outputs leave [0, 1]; use output='logits'")
    # a blank image is not enough: a network may fail only on real pixels
    probes, names = probe_images(size, device)
    with torch.no_grad():
        try:
            outputs = model.network_outputs(probes[1:])
        except Exception as exc:  # noqa: BLE001 - any way a user's network can fail on a valid input
            raise InvalidInputError(f"{name}: the network fails on {len(names) - 1} gallery scenes: "
                                    f"{exception_line(exc, last=True)}") from None
    check_outputs(model, outputs, names[1:], advice="fix the network (or its output=) before wrapping it")
    return model
