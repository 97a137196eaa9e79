"""Keep the memory that tensors free for the next ones while an attack runs (glibc only).

An attack's loop allocates and frees the same large tensors at every iteration (the model's
activations, its gradients). glibc gives the freed top of the heap back to the system once it
exceeds its trim threshold (by default twice the largest block it ever handed out by mmap), and
the next iteration takes it back page by page: on the demo models (16 images, one thread) about
1,500-2,500 page faults per forward and backward pass. On the CW family with the defaults
(``bench/cw_speed.py --same after``, 16 images per demo model, ``bench/results/cw_speed_cpu_same_after.txt``)
the old code took 21.3 million page faults and 51 s of system time in 926 s; the code with this
setting 0.17 million and 1 s, in 829 s (together with the CW loop's tensors of their own for the
running images). Values are not affected: tensors are 64-byte aligned either way and the same
kernels run (every x_adv identical there).

:func:`reuse_freed_memory` raises the trim threshold for the block and, when the last block in
the process ends, sets it back and returns what is free to the system (``malloc_trim``) once the
process has started no block for :data:`TRIM_AFTER_IDLE_S`: a batch run's next attack call,
which would take the same memory back page by page (27,000 page faults per two 60-image FGSM
calls on the demo, 21-29 % of an FGSM call, ``bench/results/peers_breakdown_cpu.txt``), finds it
still there; the app, idle between clicks, gives it back. Setting
a threshold turns off glibc's own adjustment of them for the rest of the process: the values
then kept (mmap above 32 MiB, trim above 64 MiB) are those its adjustment reaches once the
program has freed a 32 MiB block. Elsewhere (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks above this go to mmap (glibc's largest dynamic value, HEAP_MAX_SIZE / 2 on 64-bit)
MMAP_THRESHOLD = 32 * 1024 * 1024
#: the trim threshold outside the block: twice the mmap threshold, as glibc's own rule sets it
TRIM_THRESHOLD_AFTER = 2 * MMAP_THRESHOLD
#: inside the block: the freed top of the heap stays in the process (mallopt takes an int)
TRIM_THRESHOLD_DURING = 2**31 - 1

#: seconds without a block before the freed memory goes back to the system
TRIM_AFTER_IDLE_S = 2.0

_lock = threading.Lock()
_wake = threading.Condition(_lock)
_depth = 0
_libc: Any = None
#: when the freed memory goes back (time.monotonic()); None: nothing pending
_deadline: float | None = None
#: the one thread that gives it back (a thread per block cost ~0.1 ms of every attack call)
_trimmer: threading.Thread | None = None
#: the trimmer waits with no deadline (a block's end must wake it; else it wakes by itself at the
#: deadline it had and finds the new one: back-to-back calls do not wake it at every call)
_waiting_forever = False


def _glibc() -> Any:
    """libc when it is glibc with mallopt and malloc_trim, else None (looked up once)."""
    global _libc
    if _libc is None:
        _libc = False
        try:
            if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
                lib = ctypes.CDLL("libc.so.6")
                if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"):
                    _libc = lib
        except OSError:
            pass
    return _libc or None


@contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[None]:
    """Run the block with freed heap memory kept for reuse (see the module docstring).

    Nested and concurrent blocks (threads of the app) are counted: the threshold goes back when
    the last one ends. ``enabled=False``: a plain block.
    """
    global _depth, _deadline, _trimmer
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    with _lock:
        _deadline = None  # a block within the idle time: the memory is still there
        if _depth == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_DURING)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _deadline = time.monotonic() + TRIM_AFTER_IDLE_S
                if _trimmer is None or not _trimmer.is_alive():
                    _trimmer = threading.Thread(target=_trim_when_idle, name="mlalp-trim", daemon=True)
                    _trimmer.start()
                elif _waiting_forever:
                    _wake.notify()


def pending() -> bool:
    """Whether freed memory is waiting for the idle time to go back."""
    with _lock:
        return _deadline is not None


def _trim_when_idle() -> None:
    """The trimmer thread: waits for a deadline to pass with no block started since."""
    global _deadline, _waiting_forever
    with _wake:
        while True:
            if _deadline is None:
                _waiting_forever = True
                _wake.wait()
                _waiting_forever = False
                continue
            left = _deadline - time.monotonic()
            if left > 0:
                _wake.wait(left)
                continue
            _deadline = None
            if _depth == 0:
                _give_back()


def _give_back() -> None:
    """The trim threshold back, and the free memory to the system (called with the lock held, no block running)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_AFTER)
        libc.malloc_trim(0)


def trim_now() -> None:
    """Give the free memory back at once (e.g. before measuring a process's footprint)."""
    global _deadline
    with _lock:
        _deadline = None
        if _depth == 0:
            _give_back()
