"""How every figure looks: each attack's colour and printed name, sizes and fonts for the browser
and for papers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import plotly.graph_objects as go

#: One colour per attack, shared by every figure (Okabe-Ito, readable in greyscale print too).
ATTACK_COLORS = {"mla-lp": "#D55E00", "ml-deepfool": "#0072B2", "ml-cw": "#009E73",
                 "ml-rank1": "#CC79A7", "ml-rank2": "#E69F00"}


def display_name(attack: str) -> str:
    """The attack's name as the paper writes it (declared by the attack class)."""
    from ...attacks import DISPLAY_NAMES

    return DISPLAY_NAMES.get(attack, attack)


@dataclass(frozen=True)
class PublicationStyle:
    """Figure size and typography of the browser's modebar download. Sizes in CSS pixels; ``scale``
    multiplies the pixels of PNG exports and of the raster that 3D scenes become in SVG/PDF."""

    width: int = 1000
    height: int | None = None
    font_family: str = "Times New Roman, Times, serif"
    font_size: int = 14
    scale: float = 3.0
    template: str = "simple_white"


#: For the browser: the default plotly font, a little smaller; the size follows the page.
SCREEN = PublicationStyle(width=0, font_family="Arial, sans-serif", font_size=12, scale=2.0, template="plotly_white")
#: For papers: Times, a double-column width.
PAPER = PublicationStyle()


def apply_style(fig: go.Figure, style: PublicationStyle | None = None, *, height: int | None = None) -> go.Figure:
    """Set the figure's fonts, template and (when the style has one) its size; returns ``fig``."""
    style = style or SCREEN
    fig.update_layout(template=style.template, font=dict(family=style.font_family, size=style.font_size))
    h = style.height or height
    if style.width:
        fig.update_layout(width=style.width)
    if h:
        fig.update_layout(height=h)
    return fig


def with_style(fig: go.Figure, style: PublicationStyle, **changes: Any) -> go.Figure:
    """A copy of ``fig`` in ``style`` (changes override style fields), for export."""
    out = go.Figure(fig)
    return apply_style(out, replace(style, **changes) if changes else style)
