"""A perturbation's three channel surfaces (R, G, B), WebGL scenes with one z-range and one
colour scale."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...errors import InvalidInputError
from .pooling import DEFAULT_MAX_SIDE, POOLINGS, PooledPerturbation, Pooling, _as_chw, auto_z_range, pool_perturbation
from .style import PublicationStyle, apply_style

CHANNELS = ("R", "G", "B")
#: Diverging colour scale: negative blue, zero white, positive red.
COLORSCALE = "RdBu_r"


def _scene(z: float, *, axis_titles: bool = True) -> dict:
    # few ticks: WebGL draws every tick label as geometry, and fewer keep the scene quick to draw
    ax = dict(showbackground=False, showspikes=False, tickfont=dict(size=9), nticks=4)
    return dict(
        xaxis=dict(ax, title=dict(text="x" if axis_titles else "")),
        yaxis=dict(ax, title=dict(text="y" if axis_titles else ""), autorange="reversed"),
        zaxis=dict(ax, title=dict(text="r" if axis_titles else ""), range=[-z, z], nticks=5),
        aspectmode="manual", aspectratio=dict(x=1, y=1, z=0.6),
        camera=dict(eye=dict(x=1.5, y=1.5, z=0.9)),
    )


def _surface(p: PooledPerturbation, c: int, coloraxis: str, name: str) -> go.Surface:
    return go.Surface(
        z=p.values[c].astype(np.float32), x=p.cols, y=p.rows, coloraxis=coloraxis, name=name,
        # 0.99, not 1: a fully opaque surface next to a Scatter3d can vanish in plotly's image export
        opacity=0.99, showscale=False,
        hovertemplate="x %{x}<br>y %{y}<br>r %{z:.5f}<extra>" + name + "</extra>",
    )


def distortion_surfaces(
    r: Any,
    *,
    z_range: float | None = None,
    pooling: Pooling = "maxabs",
    max_side: int | None = DEFAULT_MAX_SIDE,
    title: str | None = None,
    style: PublicationStyle | None = None,
) -> go.Figure:
    """The R, G and B channels of r as three 3-D surfaces with one shared z-range and colour
    scale. ``z_range`` is the half-width (default :func:`auto_z_range`); ``max_side=None`` keeps
    the full resolution (for export)."""
    arr = _as_chw(r)
    z = float(z_range) if z_range is not None else auto_z_range(arr)
    if not z > 0:
        raise InvalidInputError(f"the z-range must be positive, got {z_range}")
    pooled = pool_perturbation(arr, max_side, pooling)
    fig = make_subplots(rows=1, cols=3, specs=[[{"type": "scene"}] * 3], horizontal_spacing=0.01,
                        subplot_titles=[f"{c} channel" for c in CHANNELS])
    for c in range(3):
        fig.add_trace(_surface(pooled, c, "coloraxis", CHANNELS[c]), row=1, col=c + 1)
    for k in range(3):
        fig.layout[f"scene{'' if k == 0 else k + 1}"].update(_scene(z))
    fig.update_layout(
        coloraxis=dict(colorscale=COLORSCALE, cmin=-z, cmax=z, cmid=0.0,
                       colorbar=dict(title=dict(text="r ([0,1])"), thickness=14, len=0.8, tickformat=".3g")),
        margin=dict(l=10, r=10, t=60 if title else 40, b=10),
        title=dict(text=title) if title else None,
        meta=dict(z_range=z, pooling=pooling, factor=pooled.factor, shape=list(arr.shape)),
    )
    if pooled.factor > 1:
        fig.add_annotation(text=f"pooled {pooled.factor}x{pooled.factor} ({POOLINGS[pooling]})",
                           xref="paper", yref="paper", x=0.0, y=-0.02, showarrow=False, font=dict(size=10))
    return apply_style(fig, style, height=380)
