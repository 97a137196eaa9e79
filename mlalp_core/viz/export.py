"""Static export of figures (SVG, PNG, PDF) and the browser-side download settings.

Two routes, because a fresh machine may have no browser for the server:

- the browser's own modebar download (:func:`download_config`, passed to ``st.plotly_chart``)
  needs nothing on the server and offers SVG and PNG;
- server-side bytes (:func:`figure_bytes`) go through kaleido, which drives a Chrome/Chromium
  already on the machine (nothing is downloaded at run time). When none is found the error
  says what to install.

3-D (WebGL) scenes are rasterised inside SVG and PDF files by any exporter; ``scale`` sets their
sharpness.
"""

from __future__ import annotations

import os
import shutil
import threading
import warnings
from typing import Any

import plotly.graph_objects as go

from ..errors import ConfigurationError, InvalidInputError, exception_line
from .figures import PAPER, PublicationStyle, with_style

#: format -> MIME type
FORMATS: dict[str, str] = {"svg": "image/svg+xml", "png": "image/png", "pdf": "application/pdf"}
#: Browser executables looked for on PATH, in order.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = ("server-side figure export needs Chrome or Chromium on this machine: install it "
                "(Debian/Ubuntu: `apt-get install chromium`) or point BROWSER_PATH at one; meanwhile the camera "
                "icon above each chart downloads SVG or PNG from your browser")


class ExportUnavailable(ConfigurationError):
    """No browser for kaleido, or kaleido itself is missing."""


def find_browser() -> str | None:
    """Path of a Chrome/Chromium kaleido can drive, or None: BROWSER_PATH, then PATH, then
    kaleido's own lookup (which also knows the usual install folders)."""
    env = os.environ.get("BROWSER_PATH", "").strip()
    if env and os.access(env, os.X_OK):
        return env
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:
        return None
    try:
        return Chromium.find_browser(skip_local=False)
    except (OSError, RuntimeError, ValueError):
        return None


def export_status() -> tuple[bool, str]:
    """(server-side export possible, what it uses or what to install)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False, "server-side figure export needs the export extra: `pip install -e '.[export]'` (kaleido)"
    browser = find_browser()
    if browser is None:
        return False, INSTALL_HINT
    return True, f"kaleido with {browser}"


_server_lock = threading.Lock()
_server_started = False


def _start_server() -> None:
    """One browser for the whole process (an export then takes ~2 s instead of ~5 s); kaleido
    closes it when the process exits."""
    global _server_started
    with _server_lock:
        if not _server_started:
            import kaleido

            kaleido.start_sync_server(silence_warnings=True)
            _server_started = True


def figure_bytes(fig: go.Figure, fmt: str, *, style: PublicationStyle | None = PAPER, width: int | None = None,
                 height: int | None = None, scale: float | None = None, keep_browser: bool = False) -> bytes:
    """The figure as SVG, PNG or PDF bytes, in ``style`` (publication size and fonts by default).

    ``keep_browser=True`` keeps one browser running for later exports (for the app).
    Raises :class:`ExportUnavailable` with what to install when no browser is found.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    ok, why = export_status()
    if not ok:
        raise ExportUnavailable(why)
    out = with_style(fig, style) if style is not None else go.Figure(fig)
    w = width or out.layout.width or 1000
    h = height or out.layout.height or 500
    s = scale if scale is not None else (style.scale if style is not None else 2.0)
    if keep_browser:
        _start_server()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "kopts ignored if using a server": harmless
            return out.to_image(format=fmt, width=int(w), height=int(h), scale=s)
    except (RuntimeError, ValueError, OSError) as exc:
        first = exception_line(exc)
        raise ExportUnavailable(f"kaleido could not export the figure ({first}); {INSTALL_HINT}") from exc


def download_config(filename: str, fmt: str = "svg", *, style: PublicationStyle | None = PAPER,
                    width: int | None = None, height: int | None = None) -> dict[str, Any]:
    """``config`` for ``st.plotly_chart``: the camera icon downloads ``filename.fmt`` at
    publication size, in the browser (no server-side browser needed). Plotly's browser
    download offers svg, png, jpeg and webp."""
    if fmt not in ("svg", "png", "jpeg", "webp"):
        raise InvalidInputError(f"the browser download offers svg, png, jpeg or webp, not {fmt!r}")
    opts: dict[str, Any] = {"format": fmt, "filename": safe_filename(filename)}
    if width or (style and style.width):
        opts["width"] = width or style.width
    if height or (style and style.height):
        opts["height"] = height or style.height
    if style is not None:
        opts["scale"] = style.scale if fmt != "svg" else 1
    return {"toImageButtonOptions": opts, "displaylogo": False}


def safe_filename(name: str) -> str:
    """A file name without path separators or odd characters."""
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip())
    return keep.strip("._") or "figure"
