"""Images for the page: the adversarial image, the amplified perturbation, PNG data URIs and a
row of images side by side."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...errors import InvalidInputError
from .pooling import _as_chw
from .style import PublicationStyle, apply_style


def adversarial_image(x: Any, r: Any) -> np.ndarray:
    """x + r clipped to [0,1], (3, H, W) (for a perturbation stored without its image)."""
    return np.clip(_as_chw(x, "image") + _as_chw(r), 0.0, 1.0)


def perturbation_image(r: Any, gain: float | None = None) -> tuple[np.ndarray, float]:
    """r made visible: 0.5 + gain * r clipped to [0,1], and the gain used (default: the largest
    |r| maps to the full range). A zero perturbation is uniform grey."""
    arr = _as_chw(r)
    m = float(np.abs(arr).max())
    g = float(gain) if gain is not None else (0.5 / m if m > 0 else 1.0)
    return np.clip(0.5 + g * arr, 0.0, 1.0), g


def _to_uint8_hwc(img: Any) -> np.ndarray:
    arr = _as_chw(img, "image")
    return np.round(np.clip(arr, 0, 1) * 255.0).astype(np.uint8).transpose(1, 2, 0)


def png_data_uri(img: Any) -> str:
    """An image (3, H, W) in [0,1] as a PNG data URI, rounded to 8 bits."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_to_uint8_hwc(img), "RGB").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _image_trace(img: Any, name: str) -> go.Image:
    # a PNG, not a pixel array: a 448x448 image is ~0.3 MB instead of ~2.5 MB of JSON, and the
    # browser decodes it natively
    return go.Image(source=png_data_uri(img), name=name, hoverinfo="x+y")


def image_row(images: Sequence[Any], titles: Sequence[str], *, style: PublicationStyle | None = None,
              height: int = 300) -> go.Figure:
    """Images (3, H, W) in [0,1] side by side, each under its title, pixels unsmoothed."""
    if len(images) != len(titles):
        raise InvalidInputError(f"{len(images)} images but {len(titles)} titles")
    fig = make_subplots(rows=1, cols=len(images), subplot_titles=list(titles), horizontal_spacing=0.02)
    for k, img in enumerate(images, start=1):
        fig.add_trace(_image_trace(img, titles[k - 1]), row=1, col=k)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor=None)
    fig.update_layout(margin=dict(l=5, r=5, t=40, b=5))
    return apply_style(fig, style, height=height)
