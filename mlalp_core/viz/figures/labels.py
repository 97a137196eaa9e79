"""An image's labels before and after an attack: the names predicted, the attacked and the wrongly
flipped labels, and the confidence bars that show them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ...errors import InvalidInputError
from .pooling import _np
from .style import PublicationStyle, apply_style


@dataclass(frozen=True)
class LabelMarks:
    """Per-label booleans behind the bar chart's marks."""

    before: np.ndarray  # predicted positive before the attack
    after: np.ndarray  # predicted positive after
    target: np.ndarray  # y*
    attacked: np.ndarray  # must change (before != y*)
    reached: np.ndarray  # attacked and now equal to y*
    wrongly_flipped: np.ndarray  # should have stayed (before == y*) but changed


def label_marks(probs_clean: Any, probs_adv: Any, target: Any, threshold: float = 0.5) -> LabelMarks:
    before = _np(probs_clean).reshape(-1) >= threshold
    after = _np(probs_adv).reshape(-1) >= threshold
    t = _np(target).reshape(-1).astype(bool)
    if not before.shape == after.shape == t.shape:
        raise InvalidInputError(f"probabilities and target disagree in length: {before.shape}, {after.shape}, {t.shape}")
    attacked = before != t
    return LabelMarks(before, after, t, attacked, attacked & (after == t), ~attacked & (after != before))


def confidence_bars(
    label_names: Sequence[str],
    probs_clean: Any,
    probs_adv: Any | None,
    target: Any,
    threshold: float = 0.5,
    *,
    title: str | None = None,
    style: PublicationStyle | None = None,
) -> go.Figure:
    """Probabilities before and after the attack per label, the threshold as a dashed line, and
    marks above the bars: a triangle on each attacked label (pointing the way it must go) and a
    cross on each label the attack flipped although it should have stayed. With ``probs_adv``
    None it previews a target: the clean probabilities and the labels y* asks to flip."""
    pc = _np(probs_clean).reshape(-1).astype(float)
    pa = pc if probs_adv is None else _np(probs_adv).reshape(-1).astype(float)
    names = [str(n) for n in label_names]
    if len(names) != pc.size:
        raise InvalidInputError(f"{len(names)} label names for {pc.size} probabilities")
    m = label_marks(pc, pa, target, threshold)
    ticks = [f"<b>{n}</b>" if a else n for n, a in zip(names, m.attacked)]
    fig = go.Figure()
    fig.add_bar(x=names, y=pc, name="before" if probs_adv is not None else "clean image", marker_color="#9AA5B1",
                hovertemplate="%{x}: %{y:.4f}<extra>before</extra>")
    if probs_adv is not None:
        fig.add_bar(x=names, y=pa, name="after", marker_color="#D55E00",
                    hovertemplate="%{x}: %{y:.4f}<extra>after</extra>")
    idx = np.flatnonzero(m.attacked)
    if idx.size:
        fig.add_scatter(
            x=[names[i] for i in idx], y=[1.06] * idx.size, mode="markers", name="attacked (must flip)",
            marker=dict(symbol=["triangle-down" if not m.target[i] else "triangle-up" for i in idx], size=13,
                        color=["#009E73" if m.reached[i] and probs_adv is not None else "#444444" for i in idx]),
            text=[("must go below" if not m.target[i] else "must go above") + " the threshold"
                  + ("" if probs_adv is None else "; reached" if m.reached[i] else "; not reached") for i in idx],
            hovertemplate="%{x}: %{text}<extra></extra>",
        )
    idx = np.flatnonzero(m.wrongly_flipped)
    if idx.size:
        fig.add_scatter(
            x=[names[i] for i in idx], y=[1.06] * idx.size, mode="markers", name="wrongly flipped",
            marker=dict(symbol="x", size=12, color="#CC0000", line=dict(width=1)),
            hovertemplate="%{x}: flipped although it should have stayed<extra></extra>",
        )
    fig.add_hline(y=threshold, line=dict(dash="dash", color="#333333", width=1.5),
                  annotation_text=f"threshold {threshold:g}", annotation_position="top left")
    fig.update_layout(
        barmode="group", bargap=0.25, title=dict(text=title) if title else None,
        yaxis=dict(title=dict(text="probability"), range=[0, 1.12]),
        xaxis=dict(tickmode="array", tickvals=names, ticktext=ticks),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        margin=dict(l=50, r=10, t=60 if title else 40, b=40),
        meta=dict(attacked=[names[i] for i in np.flatnonzero(m.attacked)],
                  wrongly_flipped=[names[i] for i in np.flatnonzero(m.wrongly_flipped)], threshold=threshold),
    )
    return apply_style(fig, style, height=360)


def predicted_names(label_names: Sequence[str], probs: Any, threshold: float = 0.5) -> list[str]:
    """Names of the labels predicted positive (probability >= threshold)."""
    p = _np(probs).reshape(-1)
    return [str(n) for n, v in zip(label_names, p) if v >= threshold]
