"""A generic, resumable training loop for mlalp's classifiers (demo models, ML-GCN, ML-LIW).

Contract:

- ``loss_fn(model, batch) -> scalar tensor``: everything model-specific (BCE or the LIW loss,
  label masks) lives in the caller's ``loss_fn``; ``fit`` only calls backward and steps.
- ``train_batches``: either a callable ``epoch -> iterable of batches`` (preferred: seed the
  epoch's shuffling with the epoch number and a resumed run sees exactly the data it would have
  seen) or a re-iterable (a list, a ``DataLoader``) iterated once per epoch. A batch is any tuple,
  list or dict of tensors, e.g. ``(images, labels, valid)``; its tensors are moved to the
  model's device before ``loss_fn`` sees them.
- A checkpoint is written atomically after every epoch when ``checkpoint_path`` is given: model,
  optimizer and scheduler state, the epoch count, the loss history and the RNG states (torch,
  CUDA, NumPy, Python), all as plain tensors and containers, so that
  ``torch.load(path, weights_only=True)`` reads it. With ``resume=True`` an existing checkpoint is continued.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigurationError, ModelLoadError
from ..progress import progress_bar

CHECKPOINT_FORMAT = "mlalp-training-checkpoint"
CHECKPOINT_VERSION = 1

Batch = Any
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
EvalFn = Callable[[nn.Module, int], dict[str, float]]


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [_to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    # RNG states must be CPU ByteTensors whatever map_location moved the checkpoint to.
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    internal, version, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (``weights_only=True``), with a clear error."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise ModelLoadError(f"{path} is not a readable training checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelLoadError(f"{path} is not an mlalp training checkpoint; delete it or pass resume=False")
    return ckpt


def fit(
    model: nn.Module,
    train_batches: Callable[[int], Iterable[Batch]] | Iterable[Batch],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    scheduler: Any | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    eval_fn: EvalFn | None = None,
    scheduler_interval: str = "epoch",
    max_grad_norm: float | None = None,
    train_mode: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` for ``epochs`` epochs; returns the per-epoch history (resumed ones included).

    ``scheduler`` is stepped after every epoch, or after every batch with
    ``scheduler_interval="step"`` (OneCycleLR). ``eval_fn(model, epoch)`` runs after each epoch;
    its numbers go into the history. Each epoch starts with ``model.train()`` unless
    ``train_mode=False``, which keeps the caller's mode (ML-LIW trains with BatchNorm in eval
    mode). ``max_grad_norm`` clips the gradient norm. A non-finite loss stops training with an
    error rather than writing a poisoned checkpoint.
    """
    if epochs < 0:
        raise ConfigurationError(f"epochs must be >= 0, got {epochs}")
    if scheduler_interval not in ("epoch", "step"):
        raise ConfigurationError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    try:
        device = next(model.parameters()).device
    except StopIteration as exc:
        raise ConfigurationError("the model has no parameters to train") from exc

    history: list[dict[str, float]] = []
    start_epoch = 0
    if checkpoint_path is not None and resume and Path(checkpoint_path).is_file():
        ckpt = load_checkpoint(checkpoint_path, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"])
        history = [dict(h) for h in ckpt.get("history", [])]

    bar_epochs = progress_bar(range(start_epoch, epochs), progress, desc="epochs", initial=start_epoch, total=epochs)
    for epoch in bar_epochs:
        if train_mode:
            model.train()
        batches = train_batches(epoch) if callable(train_batches) else train_batches
        t0 = time.perf_counter()
        total, count = 0.0, 0
        n_batches = len(batches) if hasattr(batches, "__len__") else None
        bar = progress_bar(batches, progress, desc=f"epoch {epoch + 1}/{epochs}", leave=False, total=n_batches)
        for batch in bar:
            batch = _to_device(batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the training loss became {loss.item()} at epoch {epoch + 1}; "
                                         "lower the learning rate")
            loss.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            if scheduler is not None and scheduler_interval == "step":
                scheduler.step()
            total += float(loss.detach())
            count += 1
            if progress and count % 10 == 0:
                bar.set_postfix(loss=f"{total / count:.4f}")
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        record: dict[str, float] = {"epoch": epoch + 1, "loss": total / max(count, 1),
                                    "seconds": time.perf_counter() - t0, "batches": count}
        if eval_fn is not None:
            record.update({k: float(v) for k, v in eval_fn(model, epoch).items()})
        history.append(record)
        if progress:
            bar_epochs.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k not in ("epoch", "batches")})
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "epoch": epoch + 1,
                "epochs": epochs,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": _rng_state(),
                "history": history,
            })
    return history
