"""What a multi-label data set offers the rest of mlalp (the demo set, VOC splits, uploads).

Images are produced on request at the size a model asks for, as float tensors in [0,1];
labels are bool tensors (N, l). ``valid`` marks label entries that take part in training and
evaluation (VOC's 'difficult' objects can be excluded).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import ConfigurationError


@runtime_checkable
class MultiLabelDataset(Protocol):
    name: str
    label_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def ids(self) -> list[str]:
        """Stable identifiers of the examples (file stems for VOC, scene ids for the demo)."""
        ...

    def labels(self) -> torch.Tensor:
        """(N, l) bool ground truth."""
        ...

    def valid(self) -> torch.Tensor:
        """(N, l) bool: entries that count (all True unless 'difficult' objects are excluded)."""
        ...

    def image(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        """(3, H, W) float32 in [0,1] at ``size`` = (H, W)."""
        ...


def stack_images(ds: MultiLabelDataset, indices: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) batch of the given examples."""
    if len(indices) == 0:
        return torch.empty(0, 3, *size)
    return torch.stack([ds.image(int(i), size) for i in indices])


def check_labels_match(model_name: str, model_labels: Sequence[str], data_name: str,
                       data_labels: Sequence[str]) -> None:
    """Refuse a model whose label names (in order) are not the data set's: its outputs would be
    scored against the wrong ground truth. The message names the first difference."""
    m, d = tuple(model_labels), tuple(data_labels)
    if m == d:
        return
    k = next((i for i, (a, b) in enumerate(zip(m, d)) if a != b), min(len(m), len(d)))
    first = (f"label {k} is {m[k]!r} in the model and {d[k]!r} in the data set" if k < min(len(m), len(d))
             else f"the {'model' if len(m) > len(d) else 'data set'} goes on with "
                  f"{(m if len(m) > len(d) else d)[k]!r} at label {k}")
    raise ConfigurationError(f"{model_name} does not fit {data_name}: {len(m)} vs {len(d)} labels; {first}. "
                             "Pick a model trained on this data set's labels")


class FileListDataset:
    """The protocol over a list of image files and a (N, l) 0/1 label matrix, for readers that
    build ``_files`` and ``_labels`` once (COCO, NUS-WIDE); they give ``image_path``."""

    _files: list[str]
    _labels: np.ndarray

    def __len__(self) -> int:
        return len(self._files)

    def ids(self) -> list[str]:
        return [Path(f).stem for f in self._files]

    def labels(self) -> torch.Tensor:
        return torch.from_numpy(self._labels.copy())

    def valid(self) -> torch.Tensor:
        return torch.ones(self._labels.shape, dtype=torch.bool)
