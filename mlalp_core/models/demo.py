"""The two bundled demo models, small enough to train, attack and test on a CPU.

Both read 96x96 demo scenes (``mlalp_core.data.demo``) and share one architecture of trunk,
:func:`small_trunk`: four stages of 3x3 Conv-BN-ReLU blocks (16, 32, 64, 128 channels; the first
convolution has stride 2 and each later stage starts after a 2x2 max pool), i.e. a 6x6x128 map.

- ``demo-gcn``: :class:`~mlalp_core.models.gcn.GCNClassifier` over that trunk (global max pool,
  128-d feature). Label "word vectors" are the 10x10 identity (one-hot embeddings, which the
  ML-GCN paper reports to work about as well as GloVe); gc1 maps 10 -> 64, gc2 64 -> 128; the
  adjacency is ML-GCN's re-weighted graph built from the TRAINING scenes' label co-occurrence.
  Normalised inside with ImageNet's mean/std, as ML-GCN does.
- ``demo-liw``: :class:`~mlalp_core.models.liw.LinearHeadClassifier` over the trunk plus global
  max pooling, trained with the LIW ranking loss of the paper's eq. (19). Normalised with
  mean = std = 0.5, as ML-LIW does.

After training, a temperature (about 3) is folded into the last linear map of each model
(:func:`fold_temperature`, chosen by ``mlalp_core.training.demo.choose_temperature``): trained to
near-zero loss, the raw logits reach 20 and more, where the sigmoid is flat in float32 and no
gradient-based attack can move a label. Predictions at 0.5 and rankings are unchanged.

The weights file (``assets/models/<name>.pt``) is a dict of plain tensors, strings, numbers,
lists and dicts, read with ``torch.load(weights_only=True)``; see :func:`save_demo_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..device import DeviceLike, resolve_device
from ..errors import InvalidInputError, ModelLoadError, exception_line
from . import DEMO_MODEL_NAMES
from .base import MultiLabelClassifier
from .gcn import GCNClassifier
from .liw import LinearHeadClassifier
from .pooling import ExactMaxPool2d

MODEL_FORMAT = "mlalp-demo-model"
MODEL_FORMAT_VERSION = 1
MODELS_DIR = Path(__file__).resolve().parents[2] / "assets" / "models"
DEFAULT_CHANNELS = (16, 32, 64, 128)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


def _block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def small_trunk(channels: Sequence[int] = DEFAULT_CHANNELS, stem_blocks: int = 2) -> nn.Sequential:
    """(B, 3, 96, 96) normalised -> (B, channels[-1], 6, 6): a stride-2 stem, then max-pooled stages.

    Stage s has two Conv-BN-ReLU blocks, except the last which has one (it only mixes the
    6x6 map before pooling).
    """
    if len(channels) < 2:
        raise InvalidInputError(f"the trunk needs at least two stages, got channels={list(channels)}")
    c = list(channels)
    layers: list[nn.Module] = _block(3, c[0], stride=2)
    for _ in range(stem_blocks - 1):
        layers += _block(c[0], c[0])
    for i in range(1, len(c)):
        layers.append(ExactMaxPool2d(2))  # nn.MaxPool2d's numbers, faster on the CPU
        layers += _block(c[i - 1], c[i])
        if i < len(c) - 1:
            layers += _block(c[i], c[i])
    return nn.Sequential(*layers)


def one_hot_embeddings(num_labels: int) -> np.ndarray:
    """The label 'word vectors' of demo-gcn: the identity (each label its own axis)."""
    return np.eye(num_labels, dtype=np.float32)


def build_demo_model(
    kind: str,
    label_names: Sequence[str],
    arch: dict[str, Any],
    word_vectors: np.ndarray | torch.Tensor | None = None,
    adjacency: np.ndarray | torch.Tensor | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    threshold: float = 0.5,
) -> MultiLabelClassifier:
    """An untrained demo model of ``kind`` 'gcn' or 'liw' with architecture ``arch``.

    ``arch``: {"channels": [...], "input_size": [H, W], "hidden_dim": gc1 width (gcn only)}.
    """
    channels = [int(c) for c in arch.get("channels", DEFAULT_CHANNELS)]
    h, w = (int(v) for v in arch.get("input_size", (96, 96)))
    input_size = (h, w)
    trunk = small_trunk(channels, int(arch.get("stem_blocks", 2)))
    if kind == "gcn":
        if word_vectors is None or adjacency is None:
            raise InvalidInputError("a demo-gcn model needs word vectors and an adjacency matrix")
        return GCNClassifier(
            trunk, channels[-1], word_vectors, adjacency, label_names, input_size,
            hidden_dim=int(arch.get("hidden_dim", 64)),
            mean=mean or IMAGENET_MEAN, std=std or IMAGENET_STD, threshold=threshold,
        )
    if kind == "liw":
        pooled = nn.Sequential(trunk, nn.AdaptiveMaxPool2d(1))
        return LinearHeadClassifier(pooled, channels[-1], label_names, input_size,
                                    mean=mean or HALF, std=std or HALF, threshold=threshold)
    raise InvalidInputError(f"unknown demo model kind {kind!r}: use 'gcn' or 'liw'")


@torch.no_grad()
def fold_temperature(model: MultiLabelClassifier, temperature: float) -> None:
    """Divide every logit by ``temperature`` by scaling the last linear map (in place).

    Logits are linear in gc2's weight (demo-gcn) and in fc (demo-liw), so predictions at 0.5 and
    every ranking are unchanged; only the sigmoid outputs become less saturated.
    """
    if not temperature > 0:
        raise InvalidInputError(f"temperature must be > 0, got {temperature}")
    if isinstance(model, GCNClassifier):
        model.gc2.weight.div_(temperature)
    elif isinstance(model, LinearHeadClassifier):
        model.fc.weight.div_(temperature)
        model.fc.bias.div_(temperature)
    else:
        raise InvalidInputError(f"cannot fold a temperature into a {type(model).__name__}")


def model_kind(name: str) -> str:
    if name not in DEMO_MODEL_NAMES:
        raise InvalidInputError(f"unknown demo model {name!r}; choose one of {', '.join(DEMO_MODEL_NAMES)}")
    return name.split("-", 1)[1]


def save_demo_model(model: MultiLabelClassifier, name: str, path: str | Path, arch: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write the plain-types weights file of a demo model (atomically)."""
    kind = model_kind(name)
    payload: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "name": name,
        "kind": kind,
        "arch": dict(arch),
        "label_names": list(model.label_names),
        "input_size": list(model.input_size),
        "mean": [float(v) for v in model.norm_mean.flatten()],
        "std": [float(v) for v in model.norm_std.flatten()],
        "threshold": float(model.threshold),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    if isinstance(model, GCNClassifier):
        payload["word_vectors"] = model.word_vectors.detach().cpu().clone()
        payload["adjacency"] = model.A.detach().cpu().clone()
    if extra:
        payload["extra"] = extra
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_demo_model_file(path: str | Path, device: DeviceLike = None) -> MultiLabelClassifier:
    """Load a demo weights file; any problem is a one-line :class:`ModelLoadError`."""
    path = Path(path)
    hint = "run `mlalp train-demo` to (re)create it"
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: {hint}")
    dev = resolve_device(device)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt files fail in many ways; one message for all
        raise ModelLoadError(f"{path} is not a readable demo model ({type(exc).__name__}); {hint}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_FORMAT:
        raise ModelLoadError(f"{path} is not an mlalp demo model file; {hint}")
    if int(ckpt.get("format_version", -1)) > MODEL_FORMAT_VERSION:
        raise ModelLoadError(f"{path} has format version {ckpt.get('format_version')}, newer than this "
                             f"mlalp reads ({MODEL_FORMAT_VERSION}); upgrade mlalp or {hint}")
    try:
        model = build_demo_model(
            ckpt["kind"], ckpt["label_names"], ckpt["arch"],
            word_vectors=ckpt.get("word_vectors"), adjacency=ckpt.get("adjacency"),
            mean=ckpt["mean"], std=ckpt["std"], threshold=ckpt["threshold"],
        )
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, RuntimeError, InvalidInputError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path} does not hold a valid demo model ({type(exc).__name__}: "
                             f"{exception_line(exc)}); {hint}") from exc
    model.demo_name = ckpt.get("name", path.stem)
    return model.to(dev).eval()


def load_demo_model(name: str, device: DeviceLike = None, folder: str | Path | None = None) -> MultiLabelClassifier:
    """The committed demo model ``name`` (one of :data:`DEMO_MODEL_NAMES`), in eval mode."""
    model_kind(name)
    return load_demo_model_file(Path(folder or MODELS_DIR) / f"{name}.pt", device)
