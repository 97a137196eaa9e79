"""The paper's Fig. 1: a row per attack, its three distortion surfaces and its adversarial image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...errors import InvalidInputError
from .images import _image_trace
from .pooling import Pooling, _as_chw, auto_z_range, pool_perturbation
from .style import PublicationStyle, apply_style
from .surfaces import CHANNELS, COLORSCALE, _scene, _surface


@dataclass(frozen=True)
class GridRow:
    """One attack's row of Fig. 1."""

    name: str  # shown at the row's left (e.g. "MLA-LP")
    perturbation: Any  # (3, H, W)
    adversarial: Any  # (3, H, W)
    z_range: float | None = None  # None: auto_z_range of this row
    caption: str = ""  # shown under the image (e.g. the labels after the attack)


def figure1_grid(
    rows: Sequence[GridRow],
    *,
    original: Any | None = None,
    original_caption: str = "",
    pooling: Pooling = "maxabs",
    max_side: int | None = 64,
    shared_z: bool = True,
    style: PublicationStyle | None = None,
    row_height: int = 240,
) -> go.Figure:
    """Fig. 1 of the paper: one row per attack with its R, G, B distortion surfaces and its
    adversarial image; an optional first row shows the original image.

    ``shared_z`` (default): one z-range and one colour bar for every attack, so they compare at a
    glance (the largest row's auto range, said on the figure); otherwise each row has its own, as
    the paper drew it ([-1, 1] for ML-DeepFool, [-0.03, 0.03] for the others)."""
    if not rows:
        raise InvalidInputError("Fig. 1 needs at least one attack")
    top = 1 if original is not None else 0
    n = len(rows) + top
    specs = ([[{"type": "xy"}, None, None, None]] if top else []) + \
        [[{"type": "scene"}] * 3 + [{"type": "xy"}] for _ in rows]
    heights = ([0.75] if top else []) + [1.0] * len(rows)
    fig = make_subplots(rows=n, cols=4, specs=specs, column_widths=[0.27, 0.27, 0.27, 0.19],
                        row_heights=heights, horizontal_spacing=0.01, vertical_spacing=0.03 if n > 1 else 0.0)
    if top:
        fig.add_trace(_image_trace(original, "original"), row=1, col=1)
        img = fig.get_subplot(1, 1)
        fig.add_annotation(text="<b>original</b>" + (f"<br>{original_caption}" if original_caption else ""),
                           xref="paper", yref="paper", x=img.xaxis.domain[1] + 0.01, y=sum(img.yaxis.domain) / 2,
                           showarrow=False, align="left", xanchor="left")
    ranges = []
    arrays = [_as_chw(row.perturbation) for row in rows]
    common = max(float(row.z_range) if row.z_range is not None else auto_z_range(arr)
                 for row, arr in zip(rows, arrays))
    for k, (row, arr) in enumerate(zip(rows, arrays), start=1 + top):
        z = common if shared_z else float(row.z_range) if row.z_range is not None else auto_z_range(arr)
        ranges.append(z)
        pooled = pool_perturbation(arr, max_side, pooling)
        ax = "coloraxis" if (k == 1 + top or shared_z) else f"coloraxis{k - top}"
        for c in range(3):
            fig.add_trace(_surface(pooled, c, ax, f"{row.name} {CHANNELS[c]}"), row=k, col=c + 1)
            fig.get_subplot(k, c + 1).update(_scene(z, axis_titles=False))
        fig.add_trace(_image_trace(row.adversarial, f"{row.name} adversarial"), row=k, col=4)
        y0, y1 = fig.get_subplot(k, 1).domain.y
        if shared_z:  # one colour bar over all attack rows
            y0, y1 = fig.get_subplot(len(rows) + top, 1).domain.y[0], fig.get_subplot(1 + top, 1).domain.y[1]
        fig.layout[ax] = dict(colorscale=COLORSCALE, cmin=-z, cmax=z, cmid=0.0,
                              colorbar=dict(len=(y1 - y0) * 0.95, y=(y0 + y1) / 2, yanchor="middle", x=1.0,
                                            thickness=10, tickformat=".2g", tickfont=dict(size=9),
                                            title=dict(text=f"r, all: +-{z:.3g}" if shared_z else "r", side="right")))
        fig.add_annotation(text=f"<b>{row.name}</b>", xref="paper", yref="paper", x=-0.01, y=(y0 + y1) / 2,
                           textangle=-90, showarrow=False, xanchor="right")
        if row.caption:
            img = fig.get_subplot(k, 4)
            fig.add_annotation(text=row.caption, xref="paper", yref="paper", x=sum(img.xaxis.domain) / 2,
                               y=img.yaxis.domain[0], yanchor="top", showarrow=False, font=dict(size=10))
    # column titles above the first attack row
    first = 1 + top
    for c, title in enumerate(("R channel", "G channel", "B channel", "adversarial"), start=1):
        sp = fig.get_subplot(first, c)
        xd, yd = (sp.domain.x, sp.domain.y) if c < 4 else (sp.xaxis.domain, sp.yaxis.domain)
        fig.add_annotation(text=title, xref="paper", yref="paper", x=sum(xd) / 2, y=yd[1], yanchor="bottom",
                           showarrow=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    if shared_z:
        fig.add_annotation(text=f"one z-range for all attacks: +-{common:.3g} ([0,1] units)", xref="paper",
                           yref="paper", x=0.0, y=1.0, yanchor="bottom", xanchor="left", showarrow=False,
                           font=dict(size=11))
    fig.update_layout(margin=dict(l=40, r=60, t=50, b=20),
                      meta=dict(attacks=[r.name for r in rows], z_ranges=ranges, pooling=pooling, shared_z=shared_z))
    return apply_style(fig, style, height=row_height * n)
