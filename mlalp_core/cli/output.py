"""Where the command line writes its files: checked before the work starts, not after it."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInputError


def writable_output(path: str | Path, option: str, *, folder: bool = False) -> Path:
    """``path`` ready to be written (its folder created), or a one-line error naming ``option``.

    ``folder=True``: the path is a folder to write several files into (an existing file there is
    refused); otherwise a file (an existing folder there is refused; an existing file is replaced).
    """
    p = Path(path).expanduser()
    if folder:
        if p.exists() and not p.is_dir():
            raise InvalidInputError(f"{option} {p} is an existing file; name a folder for the output files")
        target = p
    else:
        if p.is_dir():
            raise InvalidInputError(f"{option} {p} is a folder; name a file")
        target = p.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"{option} {p}: cannot create the folder {target} ({exc.strerror or exc})") from None
    return p
