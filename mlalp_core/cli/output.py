"""Where the command line writes its files: checked before the work starts, not after it.

A check creates (and removes) a file where the output will go, so a place that cannot be written
(``/proc``, a read-only mount, a folder without permission) is refused before hours of work. A
single output file replaces an existing file only when mlalp wrote that file, unchanged since
(a small ledger of what mlalp wrote, in the cache folder), or with ``--force``: a user's own file
of the same name is never lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from ..errors import InvalidInputError

#: How many written files the ledger remembers (the oldest are forgotten first).
LEDGER_SIZE = 1000


def _probe(folder: Path, option: str, shown: Path) -> None:
    """Create and remove a file in ``folder``: the one proof that it can be written."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".mlalp-write-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise InvalidInputError(f"{option} {shown}: cannot write into {folder} ({exc.strerror or exc}); name a "
                                "writable place") from None


def _special(p: Path) -> bool:
    """A device, pipe or socket (``/dev/stdout``): written in place, never replaced."""
    try:
        mode = p.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def writable_output(path: str | Path, option: str, *, folder: bool = False, force: bool = False) -> Path:
    """``path`` ready to be written (its folder created), or a one-line error naming ``option``.

    ``folder=True``: the path is a folder to write several files into (an existing file there is
    refused); otherwise a file (an existing folder there is refused; an existing file is replaced
    only when mlalp wrote it and it is unchanged since, or with ``force``).
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
    if not folder and _special(p):
        try:
            with open(p, "ab"):
                pass
        except OSError as exc:
            raise InvalidInputError(f"{option} {p}: cannot write to it ({exc.strerror or exc})") from None
        return p
    _probe(target, option, p)
    if not folder and p.exists() and not force and not _wrote(p):
        raise InvalidInputError(f"{option} {p} exists and is not a file mlalp wrote (or it was changed since): give "
                                "--force to replace it, or name another file")
    return p


def write_output(path: Path, text: str | bytes, option: str) -> None:
    """Write a checked output file whole (a new file moved into place: a failure leaves the old one
    as it was) and remember that mlalp wrote it."""
    if _special(path):
        try:
            path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        except OSError as exc:
            raise InvalidInputError(f"{option} {path}: cannot write to it ({exc.strerror or exc})") from None
        return
    data = text if isinstance(text, bytes) else text.encode()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise InvalidInputError(f"{option} {path}: cannot write it ({exc.strerror or exc}); the results are kept "
                                "where they were computed from") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    _remember(path, data)


# ---- the ledger of files mlalp wrote --------------------------------------------------------------


def _ledger_path() -> Path:
    from ..settings import load_settings

    return Path(load_settings().cache_dir) / "written-files.json"


def _read_ledger() -> dict[str, str]:
    try:
        data = json.loads(_ledger_path().read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wrote(p: Path) -> bool:
    """Whether mlalp wrote ``p`` and it holds exactly what mlalp wrote (an empty file counts too)."""
    try:
        if p.stat().st_size == 0:
            return True
        data = p.read_bytes()
    except OSError:
        return False
    return _read_ledger().get(str(p.absolute())) == _digest(data)


def _remember(p: Path, data: bytes) -> None:
    ledger = _read_ledger()
    ledger.pop(str(p.absolute()), None)
    ledger[str(p.absolute())] = _digest(data)
    keep = dict(list(ledger.items())[-LEDGER_SIZE:])
    where = _ledger_path()
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(keep, fh)
        os.replace(tmp, where)
    except OSError:
        pass  # without a ledger, the next run asks for --force: nothing is lost
