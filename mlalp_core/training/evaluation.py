"""Evaluating a classifier: Table I on a data split, and the one-image check of a model file."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import torch

from ..errors import DataError, MlalpError, ModelLoadError, exception_line
from ..progress import progress_bar

# ---------------------------------------------------------------------------------------------
# Evaluation (Table I)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module, ds: Any, batch_size: int = 8, limit: int | None = None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities, labels, valid) of a model over a data set, images resized to its size."""
    from ..data.base import stack_images
    from ..errors import InvalidInputError

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"the batch size must be an integer >= 1, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInputError(f"the limit must be an integer >= 1 (or none, for the whole data set), got {limit!r}")
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise DataError(f"{ds.name} holds no example")
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    model.eval()
    chunks = []
    starts = range(0, n, batch_size)
    for lo in progress_bar(starts, progress, desc=f"eval {ds.name}", total=len(starts), unit="batch"):
        idx = list(range(lo, min(lo + batch_size, n)))
        x = stack_images(ds, idx, model.input_size).to(device)
        chunks.append(model.probabilities(x).float().cpu())
    return torch.cat(chunks), ds.labels()[:n], ds.valid()[:n]


def table_one(scores: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    from .quality import classification_report

    return classification_report(scores, labels, threshold)


TABLE_ONE_ROWS = (
    ("hamming_loss", "hamming loss"),
    ("ranking_loss", "ranking loss"),
    ("micro_f1", "micro-F1"),
    ("macro_f1", "macro-F1"),
    ("average_precision", "average precision"),
    ("mean_ap", "mAP (per label)"),
    ("exact_match", "exact match"),
)


def masked_map(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean over labels of the average precision computed on the valid entries only (ML-GCN's
    AP meter with ``difficult_examples=True``)."""
    from .quality import mean_average_precision

    aps = []
    for j in range(scores.shape[1]):
        m = valid[:, j].bool()
        if labels[m, j].any():
            aps.append(mean_average_precision(scores[m, j:j + 1], labels[m, j:j + 1]))
    return float(np.mean(aps)) if aps else 0.0


# ---------------------------------------------------------------------------------------------
# check-model
# ---------------------------------------------------------------------------------------------


def check_model(model: torch.nn.Module, device: Any = None) -> dict[str, Any]:
    """A forward pass on a blank (grey) image and a few demo gallery scenes at the model's size
    (a network may fail only on real pixels); its outputs must be finite, and in [0,1] where it
    declares probabilities. Returns a summary."""
    from ..device import resolve_device
    from ..models.outputs import check_outputs, probe_images

    dev = resolve_device(device)
    model = model.to(dev).eval()
    x, names = probe_images(model.input_size, dev)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            outputs = model.network_outputs(x)
    except MlalpError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model that loads but cannot run
        src = getattr(model, "source", None) or type(model).__name__
        raise ModelLoadError(f"{src}: the forward pass failed: {exception_line(exc, last=True, limit=200)}") from None
    dt = time.perf_counter() - t0
    check_outputs(model, outputs, names, error=ModelLoadError, advice="fix the network (or its declared output) "
                  "before using it")
    probs = model.probabilities_from_outputs(outputs)
    info = model.describe()
    info.update(device=str(dev), forward_s=dt, images=len(names), prob_min=float(probs.min()),
                prob_max=float(probs.max()))
    return info
