"""The efficiency figure: what each attack's distortion costs in model calls, per model.

One panel per (model, data set): a point per run at (mean model calls per example, mean l_inf of
its successes), and with a budget a second row of panels with the success rate within that l_inf
budget. Lower-left is better on the top row, upper-left on the bottom one. Points come from
:func:`mlalp_core.experiments.pairwise.efficiency`; the app draws :func:`efficiency_figure`
(plotly), papers get :func:`efficiency_paper` (matplotlib, vector PDF/SVG through
:func:`mlalp_core.viz.paper.figure_bytes`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from ..errors import InvalidInputError
from .figures import ATTACK_COLORS
from .paper import _style, _width

_OTHER = "#555555"
_MARKERS = "osD^v<>ph*"
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "triangle-down", "triangle-left", "triangle-right",
            "pentagon", "hexagon", "star")


def _marker_index(points: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """One marker per run label across every panel (the legend names each marker once)."""
    return {label: i for i, label in enumerate(dict.fromkeys(p["label"] for p in points))}


def _plain_log_ticks(ax: Any) -> None:
    """Plain numbers on log axes ("0.016", "60"), not "1.6 x 10^-2"; the ticks between powers of
    ten are labelled only on an axis that spans less than ~1.3 decades (else they would crowd)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:.3g}")
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log":
            continue
        axis.set_major_formatter(plain)
        narrow = lo > 0 and hi / lo < 20
        axis.set_minor_formatter(plain if narrow else NullFormatter())


def _panels(points: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[str, str]], bool]:
    if not points:
        raise InvalidInputError("no runs to draw")
    groups = list(dict.fromkeys((p["model"], p["dataset"]) for p in points))
    return groups, all("success_within" in p for p in points)


def efficiency_figure(points: Sequence[Mapping[str, Any]], *, budget: float | None = None) -> go.Figure:
    """Plotly: mean l_inf of the successes (log) against mean model calls per example (log).

    Runs are named in a legend under the panels, not beside their points: a run's label is long
    ("ML-CW (max iterations 100, binary-search steps 3)") and beside a point near the edge it was
    cut off, or it ran over its neighbours."""
    groups, within = _panels(points)
    rows = 2 if within else 1
    fig = make_subplots(rows=rows, cols=len(groups), shared_xaxes=True, vertical_spacing=0.12,
                        horizontal_spacing=0.08, subplot_titles=[f"{m} / {d}" for m, d in groups])
    named: set[str] = set()
    marker_of = _marker_index(points)
    for col, g in enumerate(groups, start=1):
        for p in (q for q in points if (q["model"], q["dataset"]) == g):
            k = marker_of[p["label"]]
            color = ATTACK_COLORS.get(p["attack"], _OTHER)
            hover = (f"{p['label']}<br>calls %{{x:.0f}}<br>" + "%{y:.4g}<extra></extra>")
            marker = dict(color=color, size=10, symbol=_SYMBOLS[k % len(_SYMBOLS)])
            for row, y in ((1, p["linf"]), (2, p.get("success_within"))):
                if row == 2 and not within or y is None or math.isnan(y):
                    continue
                fig.add_scatter(x=[p["model_calls"]], y=[y], mode="markers", marker=marker, name=p["label"],
                                legendgroup=p["label"], showlegend=p["label"] not in named, hovertemplate=hover,
                                row=row, col=col)
                named.add(p["label"])
        fig.update_xaxes(type="log", row=rows, col=col, title=dict(text="model calls per example"))
        fig.update_yaxes(type="log", row=1, col=col)
        if within:
            fig.update_xaxes(type="log", row=1, col=col)
            fig.update_yaxes(range=[0, 1.05], row=2, col=col)
    fig.update_yaxes(title=dict(text="mean l_inf of successes ([0,1])"), row=1, col=1)
    if within:
        fig.update_yaxes(title=dict(text=f"success, l_inf <= {budget:g}" if budget else "success within budget"),
                         row=2, col=1)
    fig.update_layout(height=360 * rows + 24 * len(named), margin=dict(l=60, r=20, t=50, b=50),
                      legend=dict(orientation="h", yanchor="top", y=-0.2 / rows, x=0))
    return fig


def efficiency_paper(points: Sequence[Mapping[str, Any]], *, budget: float | None = None,
                     width: str | float = "page") -> Figure:
    """Matplotlib, for a paper: the same panels, a legend of the runs under them."""
    groups, within = _panels(points)
    rows = 2 if within else 1
    w = _width(width)
    with _style():
        fig = Figure(figsize=(w, 2.2 * rows + 0.4), layout="constrained")
        axes = fig.subplots(rows, len(groups), squeeze=False, sharex="col")
        labels: dict[str, Any] = {}
        marker_of = _marker_index(points)
        for col, g in enumerate(groups):
            top = axes[0][col]
            for p in (q for q in points if (q["model"], q["dataset"]) == g):
                k = marker_of[p["label"]]
                style = dict(color=ATTACK_COLORS.get(p["attack"], _OTHER), marker=_MARKERS[k % len(_MARKERS)],
                             linestyle="none", markersize=5)
                if not math.isnan(p["linf"]):
                    (h,) = top.plot([p["model_calls"]], [p["linf"]], label=p["label"], **style)
                    labels.setdefault(p["label"], h)
                if within:
                    (h,) = axes[1][col].plot([p["model_calls"]], [p["success_within"]], label=p["label"], **style)
                    labels.setdefault(p["label"], h)
            top.set_title(f"{g[0]} / {g[1]}")
            top.set_xscale("log")
            top.set_yscale("log")
            top.grid(alpha=0.3, linewidth=0.4)
            if within:
                axes[1][col].set_ylim(0, 1.05)
                axes[1][col].grid(alpha=0.3, linewidth=0.4)
            axes[rows - 1][col].set_xlabel("model calls per example")
            for ax in (axes[r][col] for r in range(rows)):
                _plain_log_ticks(ax)
        axes[0][0].set_ylabel(r"mean $\ell_\infty$ of successes")
        if within:
            axes[1][0].set_ylabel(rf"success, $\ell_\infty \leq$ {budget:g}" if budget else "success within budget")
        fig.legend(list(labels.values()), list(labels), loc="outside lower center", ncols=min(4, len(labels)),
                   frameon=False)
    return fig
