"""The floating-point environment of a batch run: what changes its numbers besides its settings.

The same attack with the same settings gives last-bit-different results when torch runs with
another intra-op thread count (its kernels split reductions by thread), on another instruction set
(AVX-512 and AVX2 kernels round differently), with TF32 on a GPU, or under another torch version;
iterative attacks can grow those bits into a different iterate (ML-DeepFool's steps, a success that
flips). So a run sets its numerics explicitly in every process (:func:`apply`) and records them
(:class:`Numerics`): they are part of the run's identity, a one-process run and a torchrun run of
the same command compute the same numbers, and a resume under other numerics never mixes two
numerics in one run.

The default thread count is the cores this process may use (``os.sched_getaffinity``), NOT
torch's own default, which torchrun lowers to 1 per rank through ``OMP_NUM_THREADS``: the same
command must mean the same numerics however many processes run it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .device import configure_precision, lp_batched, lp_cpu_threads
from .errors import InvalidInputError

#: Upper bound of a thread count a user can ask for (a typo such as 1000 is refused).
MAX_THREADS = 512


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The thread count of a run when none is asked for: every usable core."""
    return usable_cores()


def check_threads(threads: Any, origin: str = "threads") -> int:
    """``threads`` as a whole number >= 1 (text or int), else one line naming the value."""
    if isinstance(threads, bool):
        raise InvalidInputError(f"{origin} must be a whole number >= 1, got {threads!r}")
    text = str(threads).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_THREADS:
        raise InvalidInputError(f"{origin} must be a whole number from 1 to {MAX_THREADS}, got {threads!r}")
    return int(text)


@dataclass(frozen=True)
class Numerics:
    """What a run's floating-point results depend on, besides its settings and data."""

    threads: int  #: torch intra-op threads of every process
    torch: str  #: torch version
    device: str  #: "cpu (avx512)" or "cuda (NVIDIA H200, sm_90)"
    tf32: bool  #: TF32 matrix products and convolutions (CUDA)
    deterministic: bool  #: cuDNN deterministic algorithms, no autotuning (CUDA)
    lp_threads: int  #: torch threads of the LP solver on the CPU (MLALP_LP_THREADS)
    lp_batched: bool  #: a batch's LPs solved together (MLALP_LP_BATCH)
    #: the revision of the attack's arithmetic (:attr:`mlalp_core.attacks.base.Attack.arithmetic`),
    #: set per run: a code change that moves any bit of an attack's numbers starts runs of their own
    arithmetic: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The record kept with a run; the first arithmetic revision is left out of it, so the
        runs stored before revisions were recorded keep their keys."""
        d = asdict(self)
        if d["arithmetic"] == 1:
            del d["arithmetic"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Numerics | None:
        """The numerics stored with a run (None for runs from before they were recorded)."""
        if not text:
            return None
        return cls(**json.loads(text))

    def describe(self) -> str:
        """One line, e.g. "2 threads, torch 2.14.1+cu130, cpu (avx512)"."""
        parts = [f"{self.threads} thread{'s' if self.threads != 1 else ''}", f"torch {self.torch}", self.device]
        if self.device.startswith("cuda"):
            parts.append("TF32" if self.tf32 else "no TF32")
        if self.lp_threads != 1:
            parts.append(f"LP threads {self.lp_threads}")
        if self.lp_batched:
            parts.append("LPs batched")
        if self.arithmetic != 1:
            parts.append(f"arithmetic {self.arithmetic}")
        return ", ".join(parts)

    def differences(self, other: Numerics) -> list[str]:
        """What differs from ``other``, in words ("threads 1 (stored 2)")."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{k.replace('_', ' ')} {mine[k]} (stored {theirs[k]})" for k in mine if mine[k] != theirs[k]]


def _device_text(device: torch.device) -> str:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(idx)
        return f"cuda ({torch.cuda.get_device_name(idx)}, sm_{major}{minor})"
    return f"cpu ({torch.backends.cpu.get_cpu_capability().lower()})"


def apply(device: torch.device, threads: int | None = None) -> Numerics:
    """Set this process's numerics for a run on ``device`` and return them (call in every process
    of a sharded run, before any model work)."""
    n = default_threads() if threads is None else check_threads(threads)
    torch.set_num_threads(n)
    if device.type == "cuda":
        configure_precision()
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return current(device)


def current(device: torch.device) -> Numerics:
    """The numerics this process runs with now, on ``device``."""
    cuda = device.type == "cuda"
    return Numerics(
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        device=_device_text(device),
        tf32=bool(cuda and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)),
        deterministic=bool(cuda and torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark),
        lp_threads=lp_cpu_threads(),
        lp_batched=lp_batched(device),
    )
