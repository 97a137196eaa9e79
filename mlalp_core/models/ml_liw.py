"""ML-LIW (Song et al., ICDM 2018) as the paper trained it: Inception-v3 + a 20-way linear head.

torchvision's Inception-v3 without aux logits, ``transform_input=True`` and its fc replaced by
an identity (the trunk gives the 2048-d pooled feature); a ``Linear(2048, 20)`` head ``fc``;
299x299 input normalised with mean = std = 0.5 inside, then re-normalised by
``transform_input`` on top, as in the authors' model (a faithful copy keeps both). BatchNorm
always runs on its running statistics: the authors trained in eval mode throughout.

The authors' checkpoint (assumed layout; their ``Inceptionv3Rank`` module saved with
``torch.save(model.state_dict())`` in PyTorch 1.3's legacy format):

==========================  =======================================================
their key                   here
==========================  =======================================================
``mean``, ``std`` (3,)      the normalisation (checked finite, std > 0)
``model.fc.weight/bias``    ``fc.weight/bias`` (20x2048, 20)
``model.AuxLogits.*``       dropped: the aux head is never used at inference
``model.<other>``           ``trunk.<other>`` (Inception-v3's own names)
==========================  =======================================================

A ``module.`` prefix (DataParallel) is stripped, a ``{'state_dict': ...}`` wrapper accepted,
missing ``num_batches_tracked`` buffers filled; every other mismatch is an error (strict).
mlalp's own model file (:func:`save_ml_liw`) loads too.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.voc import VOC_CLASSES
from ..errors import ConfigurationError, ModelLoadError
from .checkpoints import (
    extract_state_dict,
    fill_num_batches_tracked,
    is_model_file,
    load_state_strict,
    read_model_file,
    safe_torch_load,
    save_model_file,
    strip_prefix,
)
from .liw import LinearHeadClassifier, liw_loss

INPUT_SIZE = (299, 299)
FEATURE_DIM = 2048
#: torchvision's file name for ``Inception_V3_Weights.IMAGENET1K_V1``.
INCEPTION_IMAGENET_FILE = "inception_v3_google-0cc3c7bd.pth"
KIND = "ml-liw"


def inception_v3_trunk() -> nn.Module:
    """torchvision Inception-v3 (no aux head, transform_input on) with fc = identity."""
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, transform_input=True, init_weights=False)
    net.fc = nn.Identity()
    return net


def imagenet_inception_v3_trunk(trunk_weights: str | os.PathLike | None = None) -> nn.Module:
    """Inception-v3 ImageNet weights from ``trunk_weights`` or torch hub's cache; never downloads."""
    path = Path(trunk_weights) if trunk_weights else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_IMAGENET_FILE
    if not path.is_file():
        raise ConfigurationError(
            f"ImageNet weights for inception_v3 are not in {path.parent}; place {INCEPTION_IMAGENET_FILE} "
            "there or pass --trunk-weights FILE"
        )
    state = strip_prefix(extract_state_dict(safe_torch_load(path, "Inception-v3 ImageNet weights"), path))
    state = OrderedDict((k, v) for k, v in state.items() if not k.startswith(("AuxLogits.", "fc.")))
    trunk = inception_v3_trunk()
    load_state_strict(trunk, fill_num_batches_tracked(trunk, state), path)
    return trunk


class MLLIW(LinearHeadClassifier):
    """Inception-v3 trunk + linear head, sigmoid outputs; trunk BatchNorm in eval mode always."""

    def __init__(
        self,
        label_names: Sequence[str] = VOC_CLASSES,
        trunk: nn.Module | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        threshold: float = 0.5,
        input_size: tuple[int, int] = INPUT_SIZE,
    ) -> None:
        super().__init__(trunk if trunk is not None else inception_v3_trunk(), FEATURE_DIM, label_names,
                         input_size, mean=mean, std=std, threshold=threshold)
        self.source: str | None = None

    def train(self, mode: bool = True) -> MLLIW:
        super().train(mode)
        self.trunk.eval()  # running statistics and no dropout, as the authors trained it
        return self

    def describe(self) -> dict:
        info = super().describe()
        info["model"] = f"ML-LIW (Inception-v3, {self.input_size[0]}x{self.input_size[1]})"
        return info


def authors_state_to_mlalp(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> tuple[OrderedDict, torch.Tensor, torch.Tensor]:
    """Map the authors' keys to ours (see the module docstring); returns (state, mean, std)."""
    state = strip_prefix(state)
    if "mean" not in state or "std" not in state:
        raise ModelLoadError(f"{path}: not an ML-LIW state dict: no 'mean'/'std' entries")
    mean, std = state["mean"].float().flatten(), state["std"].float().flatten()
    if mean.numel() != 3 or std.numel() != 3 or not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std <= 0).any():
        raise ModelLoadError(f"{path}: 'mean'/'std' must be 3 finite values (std > 0)")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        if key in ("mean", "std") or key.startswith("model.AuxLogits."):
            continue
        if key.startswith("model.fc."):
            out["fc." + key[len("model.fc."):]] = value
        elif key.startswith("model."):
            out["trunk." + key[len("model."):]] = value
        else:
            raise ModelLoadError(f"{path}: unexpected key {key!r} for an ML-LIW state dict (expected mean, std, model.*)")
    return out, mean, std


def load_ml_liw(checkpoint: str | os.PathLike) -> MLLIW:
    """ML-LIW from the authors' plain state dict or from mlalp's own model file."""
    path = Path(checkpoint)
    obj = safe_torch_load(path, "ML-LIW checkpoint")
    if is_model_file(obj):
        info = read_model_file(path, KIND, obj)
        cfg = info["config"]
        size = info["input_size"]
        if len(size) != 2 or not all(isinstance(v, int) and v >= 75 for v in size):
            raise ModelLoadError(f"{path}: invalid input_size {size!r} (Inception-v3 needs at least 75x75)")
        model = MLLIW(info["label_names"], mean=cfg.get("mean", (0.5,) * 3), std=cfg.get("std", (0.5,) * 3),
                      threshold=info["threshold"], input_size=(size[0], size[1]))
        load_state_strict(model, info["state_dict"], path)
    else:
        state, mean, std = authors_state_to_mlalp(extract_state_dict(obj, path), path)
        fc_w = state.get("fc.weight")
        labels = VOC_CLASSES
        if fc_w is not None and fc_w.dim() == 2 and fc_w.shape[0] != len(VOC_CLASSES):
            raise ModelLoadError(f"{path}: the head has {fc_w.shape[0]} outputs; the VOC model has {len(VOC_CLASSES)}")
        model = MLLIW(labels, mean=mean.tolist(), std=std.tolist())
        load_state_strict(model, fill_num_batches_tracked(model, state), path)
    model.source = str(path)
    return model.eval()


def save_ml_liw(model: MLLIW, path: str | os.PathLike, **meta: Any) -> Path:
    config = {"mean": model.norm_mean.flatten().tolist(), "std": model.norm_std.flatten().tolist(), **meta}
    return save_model_file(path, KIND, model, config=config)


def authors_state_dict(model: MLLIW) -> OrderedDict[str, torch.Tensor]:
    """The model in the authors' layout (for interoperability and for testing the mapping)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in model.state_dict().items():
        if key.startswith("trunk."):
            out["model." + key[len("trunk."):]] = value
        elif key.startswith("fc."):
            out["model." + key] = value
    out["std"] = model.norm_std.flatten().clone()
    out["mean"] = model.norm_mean.flatten().clone()
    return out


# ---------------------------------------------------------------------------------------------
# The paper's training recipe
# ---------------------------------------------------------------------------------------------


def paper_optimizer(model: MLLIW, lr: float = 1e-3) -> torch.optim.Optimizer:
    """Adam on the head only (the trunk stays frozen)."""
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    return torch.optim.Adam(model.fc.parameters(), lr=lr)


def paper_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.9)


def paper_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The LIW loss of eq. (19) on sigmoid outputs, difficult labels excluded via ``valid``."""
    return liw_loss(torch.sigmoid(logits), targets, valid=valid, instance_weight=0.5)
