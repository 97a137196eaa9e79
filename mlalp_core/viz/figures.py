"""Plotly figures of attacks and their results, as plain functions (testable without the app).

Why here and not in the pages: the pages only lay figures out; everything that decides what a
figure shows (pooling of a perturbation for the browser, z-ranges, which labels are marked) is
library code with tests. Perturbations r = x_adv - x are in [0,1] pixel units throughout.

- :func:`pool_perturbation`: reduce each channel of r to at most ``max_side`` x ``max_side``
  (max-|r| pooling keeps the signed value of largest magnitude in each block; mean pooling
  averages it), so that a 448x448 perturbation stays fluid as a WebGL surface.
- :func:`distortion_surfaces`: the three channel surfaces (R, G, B) with a shared z-range
  (default: the paper's +-0.03, or the data's when it exceeds that) and one colour scale.
- :func:`confidence_bars`: label probabilities before and after, the threshold line, the
  attacked labels and the wrongly flipped ones marked.
- :func:`trace_chart`: an attack's per-iteration trace.
- :func:`figure1_grid`: the paper's Fig. 1: a row per attack, three surfaces and the image.
- :func:`budget_curves_figure`: success rate against an l_inf and an l_2 budget.
- :func:`image_row`: original, adversarial and amplified-perturbation images side by side.
- :class:`PublicationStyle` / :func:`apply_style`: size and fonts for papers.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import InvalidInputError
from ..experiments.reporting import curve_groups, curve_names

#: The z-range of the paper's Fig. 1 for every attack but ML-DeepFool, in [0,1] pixel units.
PAPER_Z_RANGE = 0.03
#: Largest pooled side shown in the browser by default.
DEFAULT_MAX_SIDE = 128
CHANNELS = ("R", "G", "B")
#: Diverging colour scale: negative blue, zero white, positive red.
COLORSCALE = "RdBu_r"
#: One colour per attack, shared by every figure (Okabe-Ito, readable in greyscale print too).
ATTACK_COLORS = {"mla-lp": "#D55E00", "ml-deepfool": "#0072B2", "ml-cw": "#009E73",
                 "ml-rank1": "#CC79A7", "ml-rank2": "#E69F00"}

Pooling = Literal["maxabs", "mean"]
POOLINGS: dict[str, str] = {"maxabs": "max |r| (signed)", "mean": "mean"}


def display_name(attack: str) -> str:
    """The attack's name as the paper writes it (declared by the attack class)."""
    from ..attacks import DISPLAY_NAMES

    return DISPLAY_NAMES.get(attack, attack)


# ---------------------------------------------------------------------------------------------
# Styling
# ---------------------------------------------------------------------------------------------


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


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _as_chw(r: Any, what: str = "perturbation") -> np.ndarray:
    arr = _np(r).astype(np.float64)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise InvalidInputError(f"the {what} must have shape (3, H, W), got {tuple(arr.shape)}")
    return arr


# ---------------------------------------------------------------------------------------------
# Pooling and ranges
# ---------------------------------------------------------------------------------------------


def pool_factor(height: int, width: int, max_side: int | None) -> int:
    """Block side that brings the larger image side to at most ``max_side`` (1 = no pooling)."""
    if max_side is None:
        return 1
    if max_side < 1:
        raise InvalidInputError(f"max_side must be at least 1, got {max_side}")
    return max(1, math.ceil(max(height, width) / max_side))


def pool2d(a: np.ndarray, factor: int, mode: Pooling = "maxabs") -> np.ndarray:
    """Pool a 2-D array in ``factor`` x ``factor`` blocks (the last blocks may be partial).

    ``maxabs`` keeps, per block, the value of largest magnitude with its sign (what a reader of
    a distortion map looks for: the strongest change); ``mean`` averages the block's pixels.
    """
    if mode not in POOLINGS:
        raise InvalidInputError(f"pooling must be one of {', '.join(POOLINGS)}, got {mode!r}")
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise InvalidInputError(f"pool2d needs a 2-D array, got shape {a.shape}")
    if factor <= 1:
        return a.copy()
    h, w = a.shape
    hb, wb = math.ceil(h / factor), math.ceil(w / factor)
    padded = np.full((hb * factor, wb * factor), np.nan)
    padded[:h, :w] = a
    blocks = padded.reshape(hb, factor, wb, factor).transpose(0, 2, 1, 3).reshape(hb, wb, factor * factor)
    if mode == "mean":
        return np.nanmean(blocks, axis=2)
    magnitude = np.where(np.isnan(blocks), -1.0, np.abs(blocks))
    pick = magnitude.argmax(axis=2)[..., None]
    return np.take_along_axis(blocks, pick, axis=2)[..., 0]


def _block_centres(n: int, factor: int) -> np.ndarray:
    """Pixel coordinate of the centre of each block along an axis of length ``n``."""
    starts = np.arange(0, n, factor)
    ends = np.minimum(starts + factor, n) - 1
    return (starts + ends) / 2.0


@dataclass(frozen=True)
class PooledPerturbation:
    values: np.ndarray  # (3, h, w)
    rows: np.ndarray  # (h,) pixel row of each block's centre
    cols: np.ndarray  # (w,) pixel column of each block's centre
    factor: int
    mode: str


def pool_perturbation(r: Any, max_side: int | None = DEFAULT_MAX_SIDE, mode: Pooling = "maxabs") -> PooledPerturbation:
    """Each channel of r (3, H, W) pooled to at most ``max_side`` per side (None: full size)."""
    arr = _as_chw(r)
    f = pool_factor(arr.shape[1], arr.shape[2], max_side)
    values = np.stack([pool2d(arr[c], f, mode) for c in range(3)])
    return PooledPerturbation(values, _block_centres(arr.shape[1], f), _block_centres(arr.shape[2], f), f, mode)


def _nice_ceil(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 (times a power of ten) that is >= v."""
    if v <= 0:
        return PAPER_Z_RANGE
    exp = math.floor(math.log10(v))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        c = m * 10.0**exp
        if c >= v * (1 - 1e-12):
            return float(f"{c:.12g}")
    return 10.0 ** (exp + 1)


def auto_z_range(r: Any, paper: float = PAPER_Z_RANGE) -> float:
    """Half-width of the z-range: the paper's (+-0.03) when the data fit in it, else the
    data's largest |r| rounded up to a round number (the paper drew ML-DeepFool on [-1, 1])."""
    m = float(np.abs(_np(r)).max()) if _np(r).size else 0.0
    if m <= paper:
        return paper
    return min(_nice_ceil(m), 1.0) if m <= 1.0 else _nice_ceil(m)  # |r| <= 1 for images in [0,1]


#: How the z-range of the surfaces is chosen (see :func:`z_range_for`).
Z_MODES: dict[str, str] = {
    "auto": "auto (paper's +-0.03, wider when the data need it)",
    "paper": "paper's +-0.03",
    "data": "fit the data (largest |r|)",
    "custom": "custom",
}


def z_range_for(r: Any, mode: str = "auto", custom: float | None = None) -> float:
    """Half-width of the z-range for perturbation r under ``mode`` (keys of :data:`Z_MODES`)."""
    if mode == "auto":
        return auto_z_range(r)
    if mode == "paper":
        return PAPER_Z_RANGE
    if mode == "data":
        m = float(np.abs(_np(r)).max()) if _np(r).size else 0.0
        return m if m > 0 else PAPER_Z_RANGE
    if mode == "custom":
        if custom is None or not custom > 0:
            raise InvalidInputError(f"a custom z-range must be a positive number, got {custom!r}")
        return float(custom)
    raise InvalidInputError(f"z-range mode must be one of {', '.join(Z_MODES)}, got {mode!r}")


# ---------------------------------------------------------------------------------------------
# Surfaces
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Label confidences
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Per-iteration trace
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def predicted_names(label_names: Sequence[str], probs: Any, threshold: float = 0.5) -> list[str]:
    """Names of the labels predicted positive (probability >= threshold)."""
    p = _np(probs).reshape(-1)
    return [str(n) for n, v in zip(label_names, p) if v >= threshold]


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


# ---------------------------------------------------------------------------------------------
# The paper's Fig. 1
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Success rate against a budget
# ---------------------------------------------------------------------------------------------

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


def with_style(fig: go.Figure, style: PublicationStyle, **changes: Any) -> go.Figure:
    """A copy of ``fig`` in ``style`` (changes override style fields), for export."""
    out = go.Figure(fig)
    return apply_style(out, replace(style, **changes) if changes else style)
