"""The one place that decides where tensors live.

Order: an explicit argument (the CLI's ``--device``, the app's sidebar), then ``MLALP_DEVICE``,
then ``device`` in ``mlalp.toml``, then CUDA when present, else the CPU. Asking for a device that
does not exist is an error naming the value and its origin, never a silent fallback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .settings import Settings

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
        allow_tf32 = tf32_from_env()
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


def tf32_from_env() -> bool:
    """``MLALP_TF32``: 1/true/yes or 0/false/no (unset: 0); any other value is refused."""
    text = os.environ.get("MLALP_TF32", "").strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise ConfigurationError(f"MLALP_TF32 must be 1 or 0 (true/false, yes/no), got {os.environ['MLALP_TF32']!r}")


def device_choice(device: DeviceLike = None, settings: Settings | None = None) -> tuple[str, str]:
    """(the device asked for, where that came from): an explicit argument (the CLI's --device, the
    app's sidebar), else MLALP_DEVICE, else mlalp.toml's ``device``, else "auto"."""
    if isinstance(device, torch.device):
        return str(device), "--device or the device argument"
    if device is not None and str(device).strip() and str(device).strip().lower() != "auto":
        return str(device).strip(), "--device or the device argument"
    from .settings import env_name, load_settings

    s = settings if settings is not None else load_settings()
    source = s.sources.get("device", "default")
    where = {"env": f"environment variable {env_name('device')}",
             "file": f"{s.config_file} (device)" if s.config_file else "mlalp.toml (device)",
             "override": "the settings override"}.get(source, "the default")
    return (s.device or "auto").strip() or "auto", where


def resolve_device(device: DeviceLike = None, settings: Settings | None = None) -> torch.device:
    """The one decision of where tensors live: :func:`device_choice`, then "auto" = CUDA when
    present, else the CPU. A device that cannot be used is a one-line error naming the value
    and where it came from; never a silent fallback."""
    name, origin = device_choice(device, settings)
    low = name.lower()
    if low == "auto":
        low = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(low)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigurationError(f"unknown device {name!r} (from {origin}): use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(f"device {name!r} (from {origin}) was asked for but no CUDA GPU is visible; "
                                     "use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigurationError(f"device {name!r} (from {origin}) does not exist: "
                                     f"{torch.cuda.device_count()} CUDA device(s) visible")
        configure_precision()
    elif dev.type != "cpu":
        raise ConfigurationError(f"device {name!r} (from {origin}) is not supported: use auto, cpu or cuda[:N]")
    return dev


def describe_device(device: DeviceLike = None) -> str:
    """A short human-readable description, e.g. for the app's sidebar."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"{dev} ({torch.cuda.get_device_name(idx)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def lp_cpu_threads() -> int:
    """Torch threads for the LP solver on the CPU: ``MLALP_LP_THREADS``, else 1.

    Its passes over A are short; with a second thread they wait on a core another process holds.
    Measured on the 2-core machine under load 3 (``bench/results/lp_threads_cpu.txt``): one thread
    0.06-0.31 s, two threads 0.14-3.0 s at d = 27,648-602,112; on a quieter machine two threads were
    1.0-1.5x faster at d = 602,112 (``lp_cpu_602k*.txt``). One thread loses little on a quiet machine
    and gains much on a busy one.
    """
    text = os.environ.get("MLALP_LP_THREADS", "").strip()
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise ConfigurationError(f"MLALP_LP_THREADS must be a whole number >= 1, got {text!r}")
    return int(text)


def lp_batched(device: torch.device) -> bool:
    """Whether an attack solves its batch's LPs together (:func:`mlalp_core.lp.solve_linf_batch`).

    ``MLALP_LP_BATCH``: ``auto`` (default: on a GPU, where one LP at a time is bound by kernel
    launches and host syncs: together, 1.3-37x fewer syncs and 1.1-8x fewer operations per
    image), ``1`` or ``0``. On this project's 2-core CPU together was 1.1-3.3x slower than one LP
    at a time (it keeps finished images in the stack; every sweep regime at d = 100,000 and
    602,112, ``bench/results/lp_batch_cpu.txt``), so the CPU solves one at a time.
    """
    text = os.environ.get("MLALP_LP_BATCH", "auto").strip().lower()
    if text not in ("auto", "1", "0"):
        raise ConfigurationError(f"MLALP_LP_BATCH must be auto, 1 or 0, got {text!r}")
    if text == "auto":
        return device.type == "cuda"
    return text == "1"


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_environment() -> list[str]:
    """Parse every environment setting of this module now (``MLALP_TF32``, ``MLALP_LP_THREADS``,
    ``MLALP_LP_BATCH``), so that a bad value stops a command before its work, not when an attack
    first reads it; returns warnings about values that are valid but costly."""
    tf32_from_env()
    threads = lp_cpu_threads()
    lp_batched(torch.device("cpu"))
    cores = cpu_cores()
    if threads > cores:
        return [f"MLALP_LP_THREADS={threads} exceeds the {cores} cores this process may use: the LP solver's "
                f"threads then wait on one another and it runs slower; set it to at most {cores}"]
    return []


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (restored afterwards; the setting is per process)."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
