"""The one place that decides where tensors live.

CUDA when present, else the CPU; overridable by argument or by the ``MLALP_DEVICE`` environment
variable. Asking for a device that does not exist is an error, never a silent fallback.
"""

from __future__ import annotations

import os

import torch

from .errors import ConfigurationError

DeviceLike = str | torch.device | None


def available_devices() -> list[str]:
    """Device names a user can pick from (for menus and help texts)."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return names


def configure_precision(allow_tf32: bool | None = None) -> None:
    """Full float32 arithmetic on CUDA unless TF32 is asked for (``MLALP_TF32=1``).

    TF32 convolutions and matrix products move gradients by ~1e-3 relative (measured on an
    H200 for Inception-v3), which breaks the agreement of Jacobians and LP solutions with the
    CPU; the default is exact float32, TF32 an explicit choice for speed.
    """
    if allow_tf32 is None:
        allow_tf32 = os.environ.get("MLALP_TF32", "0").strip().lower() in ("1", "true", "yes")
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


def resolve_device(device: DeviceLike = None) -> torch.device:
    """Turn ``None``/``"auto"``/a name into a usable ``torch.device``.

    ``None`` and ``"auto"`` honour ``MLALP_DEVICE`` first, then prefer CUDA.
    """
    if isinstance(device, torch.device):
        dev = device
    else:
        name = (device or "auto").strip().lower()
        if name == "auto":
            name = os.environ.get("MLALP_DEVICE", "auto").strip().lower() or "auto"
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ConfigurationError(
                f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'"
            ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(
                f"device {str(dev)!r} was asked for but no CUDA GPU is visible; use 'cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigurationError(
                f"device {str(dev)!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
            )
        configure_precision()
    elif dev.type not in ("cpu", "mps"):
        raise ConfigurationError(f"unsupported device type {dev.type!r}: use 'cpu' or 'cuda[:N]'")
    return dev


def describe_device(device: DeviceLike = None) -> str:
    """A short human-readable description, e.g. for the app's sidebar."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"{dev} ({torch.cuda.get_device_name(idx)})"
    return f"cpu ({torch.get_num_threads()} threads)"
