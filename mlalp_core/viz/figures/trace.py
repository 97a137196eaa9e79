"""An attack's per-iteration trace as small panels (the fields worth showing, log axes where
they span decades)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import ATTACK_COLORS, PublicationStyle, apply_style

#: Trace fields worth a panel, in order of preference, with their axis titles.
TRACE_FIELDS: tuple[tuple[str, str], ...] = (
    ("linf", "l_inf of r"),
    ("l2", "l_2 of r"),
    ("best_l2", "best l_2"),
    ("labels_wrong", "labels wrong"),
    ("labels_matching", "labels matching y*"),
    ("best_labels_matching", "labels matching y* (best)"),
    ("lp_z", "LP optimum z"),
    ("max_gap_to_threshold", "max |f - t|"),
    ("loss", "loss"),
    ("c", "c"),
    ("eps", "budget eps"),
    ("iterations", "steps run"),
)
_LOG_FIELDS = {"c", "loss"}


def trace_chart(trace: Sequence[Mapping[str, Any]], *, attack: str | None = None, max_panels: int = 4,
                threshold: float | None = None, style: PublicationStyle | None = None) -> go.Figure:
    """Small multiples of an attack's per-iteration trace (one panel per quantity, shared x).

    MLA-LP traces also get a panel of the attacked labels' probabilities with the threshold.
    """
    trace = list(trace)
    if not trace:
        fig = go.Figure()
        fig.add_annotation(text="no iterations were run (the image already matched the target)",
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
        fig.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False))
        return apply_style(fig, style, height=200)
    xkey = next((k for k in ("iteration", "step", "round") if k in trace[0]), None)
    xs = [t.get(xkey, i) if xkey else i for i, t in enumerate(trace)]
    if xkey == "step":
        xs = [x + 1 for x in xs]  # binary-search steps counted from 1, like iterations
    fields = [(k, title) for k, title in TRACE_FIELDS
              if any(isinstance(t.get(k), (int, float)) and not isinstance(t.get(k), bool) for t in trace)]
    fields = fields[: max_panels - (1 if "attacked_probs" in trace[0] else 0)]
    has_probs = any(t.get("attacked_probs") for t in trace)
    n = len(fields) + (1 if has_probs else 0)
    if n == 0:  # nothing to draw is said, not raised: a page must not fail on an odd trace
        fig = go.Figure()
        fig.add_annotation(text="the trace holds no numeric field to plot", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=0.5)
        fig.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False))
        return apply_style(fig, style, height=200)
    titles = [t for _, t in fields] + (["attacked labels' probability"] if has_probs else [])
    fig = make_subplots(rows=1, cols=n, subplot_titles=titles, horizontal_spacing=0.07)
    color = ATTACK_COLORS.get(attack or "", "#0072B2")
    xlabel = {"step": "binary-search step", "round": "budget-search round"}.get(xkey or "", "iteration")
    for k, (key, title) in enumerate(fields, start=1):
        ys = [t.get(key) if isinstance(t.get(key), (int, float)) else None for t in trace]
        fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=title, line=dict(color=color), row=1, col=k,
                        showlegend=False, hovertemplate=f"{xlabel} %{{x}}: %{{y:.5g}}<extra>{title}</extra>")
        if key in _LOG_FIELDS and all(v is None or v > 0 for v in ys):
            fig.update_yaxes(type="log", row=1, col=k)
        fig.update_xaxes(title=dict(text=xlabel), row=1, col=k)
    if has_probs:
        labels: list[str] = []
        for t in trace:
            labels += [n for n in (t.get("attacked_probs") or {}) if n not in labels]
        for name in labels:
            ys = [(t.get("attacked_probs") or {}).get(name) for t in trace]
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=name, row=1, col=n,
                            hovertemplate=f"{xlabel} %{{x}}: %{{y:.4f}}<extra>{name}</extra>")
        if threshold is not None:
            fig.add_hline(y=threshold, line=dict(dash="dash", color="#333333", width=1), row=1, col=n)
        fig.update_xaxes(title=dict(text=xlabel), row=1, col=n)
        fig.update_yaxes(range=[0, 1], row=1, col=n)
    fig.update_layout(margin=dict(l=40, r=10, t=50, b=70), legend=dict(orientation="h", y=-0.45),
                      meta=dict(fields=[k for k, _ in fields], attacked_probs=has_probs))
    return apply_style(fig, style, height=280)
