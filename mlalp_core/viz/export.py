"""Downloads of figures: the browser's own modebar download for the interactive plotly charts
(needs nothing on the server), file names, and MIME types. Static figures for papers (vector
PDF/SVG, PNG at a dpi) are drawn with matplotlib in :mod:`mlalp_core.viz.paper`.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError
from .figures import PAPER, PublicationStyle
from .paper import FORMATS

__all__ = ["FORMATS", "download_config", "safe_filename"]


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
