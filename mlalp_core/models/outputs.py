"""A network's outputs, checked where they are used.

A network that loads and runs on a blank image may still return NaN, or "probabilities" above 1,
on real images; what an attack then makes of them (an infeasible LP, a NaN gradient, a target
built from no label, a clamp that hides the fault) explains nothing. So the network's own outputs
(before mlalp turns declared probabilities into logits, which clamps them) are checked on the
images that are used: by every attack on the images it attacks, by the batch runner's selection,
and, on a blank image and a few gallery scenes, when a user's model is loaded, wrapped
(``ml.wrap``) or checked (``mlalp check-model``). A fault stops the work with one line naming the
model, the image and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidInputError, MlalpError
from .base import MultiLabelClassifier

#: Gallery scenes run besides the blank image when a model is loaded, wrapped or checked.
PROBE_SCENES = 3


def output_problems(outputs: torch.Tensor, kind: str, num_labels: int) -> list[str]:
    """Per row of a network's outputs, what is wrong with it ("" when nothing): its shape, values
    that are not finite, or declared probabilities outside [0, 1]."""
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2 or outputs.shape[1] != num_labels:
        got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        rows = outputs.shape[0] if isinstance(outputs, torch.Tensor) and outputs.dim() else 1
        return [f"has shape {got}, expected one value per label (B, {num_labels})"] * max(int(rows), 1)
    out = outputs.detach()
    finite = torch.isfinite(out)
    outside = ((out < 0) | (out > 1)).any(1) if kind == "probabilities" else None
    if bool(finite.all()) and (outside is None or not bool(outside.any())):  # the usual case, without a loop
        return [""] * out.shape[0]
    nonfinite = (~finite).sum(1)
    problems = []
    for i in range(out.shape[0]):
        bad = int(nonfinite[i])
        if bad:
            problems.append(f"is not finite (NaN or inf in {bad} of {num_labels} labels)")
        elif outside is not None and bool(outside[i]):
            problems.append(f"leaves [0, 1] (from {float(out[i].min()):.4g} to {float(out[i].max()):.4g}) although "
                            "the model declares its output as probabilities; declare logits if the network returns "
                            "logits")
        else:
            problems.append("")
    return problems


def model_name(model: torch.nn.Module) -> str:
    """How a message names a model: its registry name, its manifest's name, or its class."""
    manifest = getattr(model, "manifest", None)
    return (getattr(model, "registry_name", "") or getattr(manifest, "name", "") or type(model).__name__)


def check_outputs(model: MultiLabelClassifier, outputs: torch.Tensor, images: Sequence[str] | None = None,
                  error: type[MlalpError] = InvalidInputError, advice: str = "") -> None:
    """Raise ``error`` with one line for the first image whose outputs are wrong. ``images`` names
    the images ("example scene_003"); without it they are "image i of the batch". ``advice``: what
    to do (default: the model cannot be attacked there; check it)."""
    kind = getattr(model, "output_kind", "logits")
    for i, problem in enumerate(output_problems(outputs, kind, model.num_labels)):
        if problem:
            where = images[i] if images is not None and i < len(images) else f"image {i} of the batch"
            name = model_name(model)
            then = advice or f"it cannot be attacked there: check the network (mlalp check-model {name})"
            raise error(f"model {name}: its output on {where} {problem}; {then}")


@torch.no_grad()
def checked_probabilities(model: MultiLabelClassifier, x: torch.Tensor, images: Sequence[str] | None = None,
                          error: type[MlalpError] = InvalidInputError, advice: str = "") -> torch.Tensor:
    """The model's probabilities on ``x`` (one forward pass), its outputs checked first."""
    outputs = model.network_outputs(x)
    check_outputs(model, outputs, images, error, advice)
    return model.probabilities_from_outputs(outputs)


def probe_images(size: tuple[int, int], device: torch.device | str = "cpu") -> tuple[torch.Tensor, list[str]]:
    """A blank (grey) image and the first :data:`PROBE_SCENES` demo gallery scenes at ``size``,
    with their names: what a model is tried on before it is used."""
    from ..data.demo import load_gallery

    gallery = load_gallery()
    k = min(PROBE_SCENES, len(gallery))
    ids = gallery.ids()[:k]
    x = torch.stack([torch.full((3, *size), 0.5)] + [gallery.image(i, size) for i in range(k)])
    return x.to(device), ["a blank image"] + [f"gallery scene {n}" for n in ids]
