"""Success rate against a distortion budget: one panel per norm, one curve per run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...errors import InvalidInputError
from ...experiments.reporting import curve_groups, curve_names
from .style import ATTACK_COLORS, PublicationStyle, apply_style

BUDGET_AXES = {"linf": "l_inf budget ([0,1] units)", "l2": "l_2 budget ([0,1] units)",
               "rmsd": "RMSD budget (0..255)"}
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def budget_curves_figure(panels: Mapping[str, Mapping[Any, tuple[Any, Any]]], *, log_x: bool = True,
                         style: PublicationStyle | None = None) -> go.Figure:
    """Success rate within a distortion budget, one panel per norm (keys of ``panels``: "linf",
    "l2", "rmsd"), one curve per run (model, data set, attack, label) as returned by
    :func:`mlalp_core.experiments.reporting.budget_curves`. Colour = attack, dash = (model, data set)."""
    if not panels:
        raise InvalidInputError("no curves to draw")
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.08,
                        subplot_titles=[BUDGET_AXES.get(k, k).split(" (")[0] for k in panels])
    groups = curve_groups(panels)
    seen = set()
    for col, (norm, curves) in enumerate(panels.items(), start=1):
        for key, (eps, rate) in curves.items():
            attack, name = curve_names(key)
            g = tuple(key[:2]) if isinstance(key, tuple) else ()
            e, s = np.asarray(eps, dtype=float), np.asarray(rate, dtype=float)
            if log_x:
                keep = e > 0
                e, s = e[keep], s[keep]
            label = name + (f" ({'/'.join(map(str, g))})" if len(groups) > 1 else "")
            fig.add_scatter(x=e, y=s, mode="lines", name=label, legendgroup=label, showlegend=label not in seen,
                            line=dict(color=ATTACK_COLORS.get(attack), dash=_DASHES[groups.index(g) % len(_DASHES)],
                                      shape="hv", width=2),
                            hovertemplate="budget %{x:.4g}: %{y:.3f}<extra>" + label + "</extra>", row=1, col=col)
            seen.add(label)
        # log axes: only the decades labelled (1e-3, 0.01, ...), minor ticks unlabelled
        fig.update_xaxes(title=dict(text=BUDGET_AXES.get(norm, norm)), type="log" if log_x else "linear",
                         dtick=1 if log_x else None, tickformat=".1g" if log_x else None,
                         minor=dict(ticks="outside", ticklen=3, dtick="D1", showgrid=False) if log_x else None,
                         row=1, col=col)
        fig.update_yaxes(range=[0, 1.02], row=1, col=col)
    fig.update_yaxes(title=dict(text="success rate"), row=1, col=1)
    fig.update_layout(margin=dict(l=50, r=10, t=40, b=50), legend=dict(orientation="h", y=-0.25))
    return apply_style(fig, style, height=380)
