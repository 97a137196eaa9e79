"""Progress, one way everywhere: long work reports ``progress(done, total, message)`` to a
callback (the app draws it with st.progress, the CLI with tqdm), and loops that show a bar on
the command line use :func:`progress_bar`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: progress(done, total, message): called between steps of long work. It may raise (for example
#: :class:`~mlalp_core.attacks.base.AttackCancelled`, or a UI's own stop signal) to abandon it.
ProgressFn = Callable[[int, int, str], None]


class _Quiet:
    """A stand-in for a tqdm bar when progress is off."""

    def __init__(self, iterable: Iterable) -> None:
        self._it = iterable

    def __iter__(self) -> Iterator:
        return iter(self._it)

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass


def progress_bar(iterable: Iterable, enabled: bool, **kwargs: Any) -> Any:
    """tqdm on stderr when ``enabled`` (the command line), a silent stand-in otherwise."""
    if not enabled:
        return _Quiet(iterable)
    from tqdm.auto import tqdm

    return tqdm(iterable, dynamic_ncols=True, file=sys.stderr, **kwargs)
