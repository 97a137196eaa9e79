"""ML-GCN (Chen et al., CVPR 2019) with a ResNet-101 trunk, as the paper attacks it.

The trunk is torchvision's ResNet-101 stored as ``features`` = Sequential(conv1, bn1, relu,
maxpool, layer1..layer4), so its keys are ``features.0`` .. ``features.7`` as in the official
code; 448x448 input, a 14x14x2048 map max-pooled to 2048; graph head gc1 (300 -> 1024), gc2
(1024 -> 2048); ImageNet normalisation inside.

Files it reads (see :mod:`mlalp_core.models.checkpoints` for how they are read safely):

- ``voc_checkpoint.pth.tar``: the official dict {'epoch', 'arch', 'state_dict', 'best_score'}
  (legacy serialization, BatchNorm without ``num_batches_tracked``, maybe CUDA tensors and numpy
  scalars), loaded strictly; or mlalp's own model file written by :func:`save_ml_gcn`.
- ``voc_glove_word2vec.pkl``: a pickled (20, 300) float32 array of label word vectors.
- ``voc_adj.pkl``: {'adj': (20, 20) int counts, 'nums': (20,) int counts}; only needed to build
  a model from scratch, since a checkpoint carries the graph as its parameter ``A``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.voc import VOC_CLASSES
from ..errors import ConfigurationError, ModelLoadError
from .checkpoints import (
    check_array,
    extract_state_dict,
    fill_num_batches_tracked,
    is_model_file,
    load_array_pickle,
    load_state_strict,
    read_model_file,
    safe_torch_load,
    save_model_file,
    strip_prefix,
)
from .gcn import GCNClassifier, cooccurrence_adjacency

INPUT_SIZE = (448, 448)
FEATURE_DIM = 2048
HIDDEN_DIM = 1024
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's file name for ``ResNet101_Weights.IMAGENET1K_V1``.
RESNET101_IMAGENET_FILE = "resnet101-63fe2227.pth"
KIND = "ml-gcn"


def resnet101_features() -> nn.Sequential:
    """A randomly initialised ResNet-101 without its pooling and fc, in ML-GCN's layout."""
    import torchvision

    r = torchvision.models.resnet101(weights=None)
    return nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)


def torch_hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_resnet101_features(trunk_weights: str | os.PathLike | None = None) -> nn.Sequential:
    """ResNet-101 ImageNet weights from ``trunk_weights`` or torch hub's cache; never downloads."""
    import torchvision

    path = Path(trunk_weights) if trunk_weights else torch_hub_checkpoint_dir() / RESNET101_IMAGENET_FILE
    if not path.is_file():
        raise ConfigurationError(
            f"ImageNet weights for resnet101 are not in {path.parent}; place {RESNET101_IMAGENET_FILE} "
            "there or pass --trunk-weights FILE"
        )
    r = torchvision.models.resnet101(weights=None)
    state = strip_prefix(extract_state_dict(safe_torch_load(path, "ResNet-101 ImageNet weights"), path))
    load_state_strict(r, fill_num_batches_tracked(r, state), path)
    return nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)


class MLGCN(GCNClassifier):
    """ML-GCN for VOC: ResNet-101 trunk + graph head; parameter names as the official code."""

    def __init__(
        self,
        word_vectors: torch.Tensor | np.ndarray,
        adjacency: torch.Tensor | np.ndarray,
        label_names: Sequence[str] = VOC_CLASSES,
        features: nn.Module | None = None,
        threshold: float = 0.5,
        input_size: tuple[int, int] = INPUT_SIZE,
    ) -> None:
        super().__init__(
            features if features is not None else resnet101_features(),
            FEATURE_DIM,
            word_vectors,
            adjacency,
            label_names,
            input_size,
            hidden_dim=HIDDEN_DIM,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            threshold=threshold,
        )
        #: Set by the loaders: where the weights came from and what the official file said.
        self.source: str | None = None
        self.checkpoint_info: dict[str, Any] = {}
        #: Whether a given voc_adj.pkl reproduces the checkpoint's graph ``A`` (None: not given).
        self.adjacency_matches: bool | None = None
        #: Which published label set an official checkpoint has ("PASCAL VOC", "MS-COCO"), if any.
        self.label_set: str | None = None

    def describe(self) -> dict:
        info = super().describe()
        info["model"] = f"ML-GCN (ResNet-101, {self.input_size[0]}x{self.input_size[1]})"
        return info


# ---------------------------------------------------------------------------------------------
# Auxiliary files
# ---------------------------------------------------------------------------------------------


def load_word_vectors(path: str | os.PathLike, num_labels: int = len(VOC_CLASSES)) -> np.ndarray:
    """(l, E) float32 label word vectors from a pickled numpy array (voc_glove_word2vec.pkl)."""
    arr = load_array_pickle(path, "word-vector file")
    arr = check_array(arr, path, "word-vector array", (num_labels, None), kinds="f")
    if arr.shape[1] == 0:
        raise ModelLoadError(f"{path}: the word-vector array has no columns")
    return arr.astype(np.float32)


def load_cooccurrence(path: str | os.PathLike, num_labels: int = len(VOC_CLASSES)) -> tuple[np.ndarray, np.ndarray]:
    """(adj, nums) co-occurrence counts from voc_adj.pkl = {'adj': (l, l), 'nums': (l,)}."""
    obj = load_array_pickle(path, "co-occurrence file")
    if not isinstance(obj, dict) or set(obj) != {"adj", "nums"}:
        keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise ModelLoadError(f"{path}: expected a dict with keys 'adj' and 'nums', got {keys}")
    adj = check_array(obj["adj"], path, "'adj' count matrix", (num_labels, num_labels), kinds="iuf")
    nums = check_array(obj["nums"], path, "'nums' count vector", (num_labels,), kinds="iuf")
    if (adj < 0).any() or (nums < 0).any():
        raise ModelLoadError(f"{path}: co-occurrence counts must be non-negative")
    return adj.astype(np.float64), nums.astype(np.float64)


def load_adjacency(path: str | os.PathLike, num_labels: int = len(VOC_CLASSES)) -> np.ndarray:
    """ML-GCN's re-weighted graph (gen_A with t = 0.4) from a co-occurrence file."""
    adj, nums = load_cooccurrence(path, num_labels)
    return cooccurrence_adjacency(adj, nums, t=0.4)


def cooccurrence_from_labels(labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(adj, nums) counts from a training label matrix, the way voc_adj.pkl was made: adj[i, j]
    = images holding both i and j (zero diagonal), nums[i] = images holding i."""
    y = labels.bool().to(torch.float64).numpy()
    adj = y.T @ y
    np.fill_diagonal(adj, 0.0)
    return adj, y.sum(0)


# ---------------------------------------------------------------------------------------------
# Building and loading
# ---------------------------------------------------------------------------------------------


def label_set(state: dict[str, Any], path: Path) -> tuple[str, tuple[str, ...]]:
    """The labels of an official checkpoint, from the size of its graph ``A``: 20 (VOC), 80 (COCO)."""
    from ..data.coco import COCO_CLASSES

    sets = {20: ("PASCAL VOC", VOC_CLASSES), 80: ("MS-COCO", COCO_CLASSES)}
    a = state.get("A")
    if not isinstance(a, torch.Tensor) or a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ModelLoadError(f"{path}: no square label graph 'A' in the checkpoint: not an ML-GCN checkpoint")
    n = int(a.shape[0])
    if n not in sets:
        raise ModelLoadError(f"{path}: the checkpoint has {n} labels; ML-GCN's published checkpoints have 20 (VOC) "
                             "or 80 (COCO)")
    return sets[n]


def load_ml_gcn(
    checkpoint: str | os.PathLike,
    word_vectors: str | os.PathLike | None = None,
    adjacency: str | os.PathLike | None = None,
) -> MLGCN:
    """ML-GCN from the official checkpoint (plus word vectors) or from mlalp's own model file
    (which carries the word vectors it was trained with; ``word_vectors`` is then not used).

    The official file loads strictly; only the ``num_batches_tracked`` buffers that PyTorch 0.3
    did not save are filled in (and a DataParallel ``module.`` prefix stripped). ``adjacency``
    is optional: the checkpoint's ``A`` is the graph that was trained; when given, the file is
    read and validated too (check-model reports whether it agrees with ``A``).
    """
    ckpt_path = Path(checkpoint)
    obj = safe_torch_load(ckpt_path, "ML-GCN checkpoint")
    if is_model_file(obj):
        info = read_model_file(ckpt_path, KIND, obj)
        wv = info["extra"].get("word_vectors")  # the ones it was trained with; a given file is not used
        if not isinstance(wv, torch.Tensor):
            raise ModelLoadError(f"{ckpt_path}: mlalp model file without word vectors")
        l = len(info["label_names"])
        model = MLGCN(wv, np.eye(l, dtype=np.float32), info["label_names"], threshold=info["threshold"],
                      input_size=_input_size(info, ckpt_path))
        load_state_strict(model, info["state_dict"], ckpt_path)
    else:
        if word_vectors is None:
            raise ConfigurationError(
                f"{ckpt_path}: the official ML-GCN checkpoint needs its word vectors: give "
                "voc_glove_word2vec.pkl (MLALP_MLGCN_WORD_VECTORS or --word-vectors)"
            )
        state = strip_prefix(extract_state_dict(obj, ckpt_path))
        set_name, labels = label_set(state, ckpt_path)
        wv = load_word_vectors(word_vectors, len(labels))
        gc1 = state.get("gc1.weight")
        if gc1 is not None and gc1.dim() == 2 and gc1.shape[0] != wv.shape[1]:
            raise ModelLoadError(f"{word_vectors}: the word vectors are {wv.shape[1]}-dimensional but the "
                                 f"checkpoint's gc1 takes {gc1.shape[0]}: the files do not belong together")
        # The placeholder graph is overwritten by the checkpoint's trained ``A``.
        model = MLGCN(wv, np.eye(len(labels), dtype=np.float32), labels)
        model.label_set = set_name
        load_state_strict(model, fill_num_batches_tracked(model, state), ckpt_path)
        meta = {k: obj[k] for k in ("epoch", "arch", "best_score") if isinstance(obj, dict) and k in obj}
        model.checkpoint_info = {k: (v.item() if hasattr(v, "item") else v) for k, v in meta.items()}
    if not torch.isfinite(model.A).all():
        raise ModelLoadError(f"{ckpt_path}: the graph A contains NaN or infinite values")
    if adjacency is not None:
        expected = torch.from_numpy(load_adjacency(adjacency, model.num_labels))
        model.adjacency_matches = bool(torch.allclose(expected, model.A.detach().float(), atol=1e-4))
    model.source = str(ckpt_path)
    return model.eval()


def _input_size(info: dict, path: Path) -> tuple[int, int]:
    size = info["input_size"]
    if len(size) != 2 or not all(isinstance(v, int) and v >= 32 for v in size):
        raise ModelLoadError(f"{path}: invalid input_size {size!r}")
    return (size[0], size[1])


def build_ml_gcn(
    word_vectors: str | os.PathLike | np.ndarray,
    adjacency: str | os.PathLike | np.ndarray,
    features: nn.Module | None = None,
    input_size: tuple[int, int] = INPUT_SIZE,
) -> MLGCN:
    """A new ML-GCN to train: word vectors (file or array), the graph (co-occurrence file or an
    already re-weighted (l, l) array), and a trunk (random ResNet-101 when None)."""
    wv = word_vectors if isinstance(word_vectors, np.ndarray) else load_word_vectors(word_vectors)
    adj = adjacency if isinstance(adjacency, np.ndarray) else load_adjacency(adjacency)
    return MLGCN(wv, adj, features=features, input_size=input_size)


def save_ml_gcn(model: MLGCN, path: str | os.PathLike, **meta: Any) -> Path:
    """mlalp's own file: state dict (with ``A``) plus the word vectors, one file to load."""
    return save_model_file(path, KIND, model, config=meta, extra={"word_vectors": model.word_vectors})


# ---------------------------------------------------------------------------------------------
# The paper's training recipe (ML-GCN's)
# ---------------------------------------------------------------------------------------------

#: ML-GCN's multi-scale crop scales and the largest index gap between width and height scales.
CROP_SCALES = (1.0, 0.875, 0.75, 0.66, 0.5)
CROP_MAX_DISTORT = 2


def training_augment(x: torch.Tensor, size: tuple[int, int] = INPUT_SIZE, generator: torch.Generator | None = None) -> torch.Tensor:
    """ML-GCN's training augmentation for a (3, H, W) image in [0,1]: a crop whose width and
    height are min(H, W) times scales from :data:`CROP_SCALES` (at most two steps apart) at a
    random position, resized bilinearly to ``size``, flipped horizontally with probability 1/2."""
    import torch.nn.functional as F

    _, h, w = x.shape
    base = min(h, w)
    pairs = [(i, j) for i in range(len(CROP_SCALES)) for j in range(len(CROP_SCALES)) if abs(i - j) <= CROP_MAX_DISTORT]
    i, j = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
    cw, ch = max(1, int(base * CROP_SCALES[i])), max(1, int(base * CROP_SCALES[j]))
    top = int(torch.randint(h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(w - cw + 1, (1,), generator=generator))
    crop = x[:, top:top + ch, left:left + cw]
    out = F.interpolate(crop[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if float(torch.rand((), generator=generator)) < 0.5:
        out = out.flip(-1)
    return out.clamp(0, 1)


def paper_optimizer(model: MLGCN, lr: float = 0.01, trunk_lr_factor: float = 0.1,
                    momentum: float = 0.9, weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """SGD as ML-GCN: the pretrained trunk at lr * 0.1, the graph convolutions at lr; ``A`` frozen."""
    return torch.optim.SGD(
        [
            {"params": list(model.features.parameters()), "lr": lr * trunk_lr_factor},
            {"params": list(model.gc1.parameters()) + list(model.gc2.parameters()), "lr": lr},
        ],
        lr=lr, momentum=momentum, weight_decay=weight_decay,
    )


def paper_scheduler(optimizer: torch.optim.Optimizer, step: int = 40) -> torch.optim.lr_scheduler.LRScheduler:
    """x0.1 every 40 epochs (the paper's wording; ML-GCN's script cut once, at epoch 40)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=0.1)


def paper_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MultiLabelSoftMarginLoss on {0,1} targets: mean over labels and images of the BCE."""
    return nn.functional.multilabel_soft_margin_loss(logits, targets.to(logits.dtype))
