"""Exceptions whose message is a one-line explanation a user can act on."""

from __future__ import annotations


class MlalpError(Exception):
    """Base class: the message is meant to be shown to the user as it is."""


class ConfigurationError(MlalpError):
    """A path, a setting or a device that cannot be used."""


class InvalidInputError(MlalpError, ValueError):
    """An image, a target or a parameter of the wrong shape, range or type."""


class ModelLoadError(MlalpError):
    """A checkpoint, manifest or auxiliary file that cannot be loaded as the model it claims."""


class DataError(MlalpError):
    """A data set folder, split file, annotation or image that cannot be read."""


class SolverError(MlalpError):
    """An LP backend that is unavailable or failed."""


def exception_line(exc: BaseException, *, last: bool = False, limit: int = 300) -> str:
    """One line of another library's error for a one-line message: its first non-empty line (its
    last with ``last=True``: TorchScript and some torch errors put the reason at the end), at most
    ``limit`` characters; the exception's type name when it says nothing."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return (lines[-1] if last else lines[0])[:limit]
