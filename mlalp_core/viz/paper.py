"""Static figures for papers, drawn with matplotlib (no browser needed): the paper's Fig. 1 grid,
the single-result panel, and the success-against-budget curves; saved as true vector PDF/SVG
or as PNG at a chosen dpi.

Why matplotlib next to the plotly figures of the app: a paper wants vector graphics, fonts that
match at column width, and an export that cannot hang on a browser. The 3-D distortion surfaces
are drawn as vector polygons at a pooled resolution (``resolution``, the larger side, default 32
in the grid, 48 in the single-result panel); above :data:`RASTER_ABOVE` cells per side they are
embedded as a raster at the file's dpi instead (documented fallback: a 448x448 surface as
polygons would be 200,000 of them per channel). Everything else stays vector.

Sizes follow a two-column paper: :data:`COLUMN` (3.5 in) and :data:`PAGE` (7.16 in) wide,
8-pt text. Perturbations r = x_adv - x are in [0,1] pixel units throughout.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps, rcParams
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter

from ..errors import InvalidInputError
from ..experiments.reporting import curve_groups, curve_names
from .figures import (
    ATTACK_COLORS,
    CHANNELS,
    PAPER_Z_RANGE,
    GridRow,
    auto_z_range,
    label_marks,
    perturbation_image,
    pool_perturbation,
)
from .figures.pooling import _as_chw, _np

#: Widths of a two-column paper (IEEE), in inches.
COLUMN = 3.5
PAGE = 7.16
#: Surfaces with more cells than this per side are embedded as a raster (see the module docstring).
RASTER_ABOVE = 64
#: Output formats and their MIME types.
FORMATS: dict[str, str] = {"pdf": "application/pdf", "svg": "image/svg+xml", "png": "image/png"}
_STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "font.family": "serif", "font.serif": ["DejaVu Serif"], "mathtext.fontset": "dejavuserif",
    "axes.linewidth": 0.6, "lines.linewidth": 1.2, "svg.fonttype": "none", "pdf.fonttype": 42,
}
_CMAP = colormaps["RdBu_r"]


def _width(width: str | float) -> float:
    if width == "column":
        return COLUMN
    if width == "page":
        return PAGE
    try:
        w = float(width)
    except (TypeError, ValueError):
        raise InvalidInputError(f"width must be 'column', 'page' or inches, got {width!r}") from None
    if not 1.0 <= w <= 20.0:
        raise InvalidInputError(f"width must be between 1 and 20 inches, got {w}")
    return w


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 4 <= resolution <= 512:
        raise InvalidInputError(f"the surface resolution must be an integer from 4 to 512, got {resolution!r}")
    return resolution


def _surface(ax: Any, r_channel: np.ndarray, rows: np.ndarray, cols: np.ndarray, z: float, *,
             labels: bool, zticks: bool = True) -> None:
    """One channel as a 3-D surface on [-z, z], coloured by value."""
    X, Y = np.meshgrid(cols, rows)
    Zc = np.clip(r_channel, -z, z)
    colors = _CMAP(Normalize(-z, z)(Zc))
    surf = ax.plot_surface(X, Y, Zc, facecolors=colors, rstride=1, cstride=1, linewidth=0, antialiased=False,
                           shade=False)
    if max(r_channel.shape) > RASTER_ABOVE:
        surf.set_rasterized(True)
    ax.set_zlim(-z, z)
    ax.set_xlim(cols[0], cols[-1])
    ax.set_ylim(rows[-1], rows[0])  # image rows downwards, as in the picture
    ax.view_init(elev=28, azim=-58)
    ax.set_box_aspect((1, 1, 0.6), zoom=0.92)
    ax.set_zticks([-z, 0, z])
    ax.set_zticklabels([f"{-z:.2g}", "0", f"{z:.2g}"] if zticks else [])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.tick_params(axis="z", pad=1, labelsize=6)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.pane.set_visible(False)
        axis.line.set_linewidth(0.4)
    if labels:
        ax.set_xlabel("x", labelpad=-12)
        ax.set_ylabel("y", labelpad=-12)


def _image(ax: Any, img: Any) -> None:
    arr = _np(img)
    if arr.ndim == 3 and arr.shape[0] == 3:
        arr = np.transpose(arr, (1, 2, 0))
    ax.imshow(np.clip(arr, 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _colorbar(fig: Figure, z: float, ax_or_cax: Any, label: str, **kw: Any) -> None:
    from matplotlib.cm import ScalarMappable

    sm = ScalarMappable(norm=Normalize(-z, z), cmap=_CMAP)
    cb = fig.colorbar(sm, **kw)
    cb.set_label(label)
    cb.set_ticks([-z, -z / 2, 0, z / 2, z])
    cb.ax.tick_params(labelsize=6)


# ---------------------------------------------------------------------------------------------
# Fig. 1
# ---------------------------------------------------------------------------------------------


def shared_z_range(perturbations: Sequence[Any]) -> float:
    """One half-width for all rows: the paper's +-0.03 when every row fits, else the largest
    row's rounded up (so the attacks can be compared at a glance)."""
    return max(auto_z_range(_as_chw(r)) for r in perturbations) if perturbations else PAPER_Z_RANGE


def fig1_grid(rows: Sequence[GridRow], *, original: Any | None = None, original_caption: str = "",
              shared_z: bool = True, z_range: float | None = None, resolution: int = 32, pooling: str = "maxabs",
              width: str | float = "page") -> Figure:
    """The paper's Fig. 1: a row per attack with its R, G, B distortion surfaces and its
    adversarial image (labels below it); the original image heads the image column.

    ``shared_z`` (default): one z-range and one colour bar for all attacks, said on the figure;
    otherwise each row has its own. ``z_range`` fixes the half-width.
    """
    if not rows:
        raise InvalidInputError("Fig. 1 needs at least one attack")
    resolution = _check_resolution(resolution)
    w = _width(width)
    per = [_as_chw(r.perturbation) for r in rows]
    zs = [float(z_range)] * len(rows) if z_range else (
        [shared_z_range(per)] * len(rows) if shared_z else [auto_z_range(p) for p in per])
    top = original is not None
    n = len(rows) + (1 if top else 0)
    shared = bool(shared_z or z_range)
    row_h = w * 0.165
    height = row_h * n + 0.3
    with _style():
        fig = Figure(figsize=(w, height), layout="none")
        gs = fig.add_gridspec(n, 5, width_ratios=[1, 1, 1, 0.8, 0.05], left=0.05, right=0.9,
                              top=1 - 0.18 / height, bottom=0.02, wspace=0.04, hspace=0.1)
        if top:
            ax = fig.add_subplot(gs[0, 3])
            _image(ax, original)
            ax.set_title("original", pad=2)
            if original_caption:
                ax.set_xlabel(original_caption, labelpad=1, fontsize=6)
            note = fig.add_subplot(gs[0, 0:3])
            note.axis("off")
            scale = (f"one z-range for all attacks: +-{zs[0]:.3g}" if shared else "each attack its own z-range")
            note.text(0.02, 0.5, "\n".join(textwrap.wrap(
                f"Distortion r = x_adv - x per channel, in [0,1] pixel units, pooled to {resolution} cells per "
                f"side ({'max |r|, signed' if pooling == 'maxabs' else 'mean'}); {scale}.", 70)),
                fontsize=7, va="center", ha="left")
        for k, (row, arr, z) in enumerate(zip(rows, per, zs)):
            g = k + (1 if top else 0)
            pooled = pool_perturbation(arr, resolution, pooling)  # type: ignore[arg-type]
            for c in range(3):
                ax = fig.add_subplot(gs[g, c], projection="3d")
                _surface(ax, pooled.values[c], pooled.rows, pooled.cols, z, labels=False, zticks=(c == 0))
                if k == 0:
                    ax.set_title(f"{CHANNELS[c]} channel", pad=0)
            ax = fig.add_subplot(gs[g, 3])
            _image(ax, row.adversarial)
            if k == 0 and not top:
                ax.set_title("adversarial", pad=2)
            if row.caption:
                ax.set_xlabel(row.caption, labelpad=1, fontsize=6)
            box = gs[g, 0].get_position(fig)
            fig.text(0.012, box.y0 + box.height / 2, row.name, rotation=90, va="center", ha="left",
                     fontweight="bold")
            if not shared:
                _colorbar(fig, z, None, "r", cax=fig.add_subplot(gs[g, 4]))
        if shared:
            _colorbar(fig, zs[0], None, f"r ([0,1] units), +-{zs[0]:.3g} for all", cax=fig.add_subplot(gs[(1 if top else 0):, 4]))
    fig._mlalp_meta = {"z_ranges": zs, "shared": bool(shared_z or z_range), "attacks": [r.name for r in rows]}
    return fig


# ---------------------------------------------------------------------------------------------
# One result
# ---------------------------------------------------------------------------------------------


def result_panel(*, x: Any, x_adv: Any, r: Any, label_names: Sequence[str], probs_clean: Any, probs_adv: Any,
                 target: Any, threshold: float = 0.5, trace: Sequence[Mapping[str, Any]] = (), title: str = "",
                 z_range: float | None = None, resolution: int = 48, pooling: str = "maxabs",
                 width: str | float = "page") -> Figure:
    """One result on one page: original, adversarial and amplified perturbation; the R, G, B
    distortion surfaces; label confidences before and after with the threshold; the trace."""
    resolution = _check_resolution(resolution)
    w = _width(width)
    arr = _as_chw(r)
    z = float(z_range) if z_range else auto_z_range(arr)
    with _style():
        fig = Figure(figsize=(w, w * 0.92), layout="none")
        gs = fig.add_gridspec(3, 4, height_ratios=[1, 1.05, 1.1], width_ratios=[1, 1, 1, 0.05], left=0.08,
                              right=0.88, top=0.94 if title else 0.97, bottom=0.1, hspace=0.45, wspace=0.18)
        if title:
            fig.suptitle(title, fontsize=8, y=0.99)
        pimg, gain = perturbation_image(arr)
        for c, (img, name) in enumerate(((x, "original"), (x_adv, "adversarial"),
                                         (pimg, f"perturbation x{gain:.3g} (0 = grey)"))):
            ax = fig.add_subplot(gs[0, c])
            _image(ax, img)
            ax.set_title(name, pad=2)
        pooled = pool_perturbation(arr, resolution, pooling)  # type: ignore[arg-type]
        for c in range(3):
            ax = fig.add_subplot(gs[1, c], projection="3d")
            _surface(ax, pooled.values[c], pooled.rows, pooled.cols, z, labels=True)
            ax.set_title(f"{CHANNELS[c]} channel", pad=0)
        _colorbar(fig, z, None, "r ([0,1] units)", cax=fig.add_subplot(gs[1, 3]))
        bottom = gs[2, :].subgridspec(1, 2, width_ratios=[1.7, 1], wspace=0.3)
        _bars(fig.add_subplot(bottom[0, 0]), label_names, probs_clean, probs_adv, target, threshold)
        _trace(fig.add_subplot(bottom[0, 1]), trace)
    return fig


def _bars(ax: Any, names: Sequence[str], probs_clean: Any, probs_adv: Any, target: Any, threshold: float) -> None:
    pc, pa = _np(probs_clean).reshape(-1), _np(probs_adv).reshape(-1)
    m = label_marks(pc, pa, target, threshold)
    idx = np.arange(len(names))
    ax.bar(idx - 0.2, pc, 0.4, color="#9AA5B1", label="before")
    ax.bar(idx + 0.2, pa, 0.4, color=ATTACK_COLORS["mla-lp"], label="after")
    ax.axhline(threshold, color="#333333", linestyle="--", linewidth=0.8)
    ax.text(-0.5, threshold + 0.02, f"threshold {threshold:g}", ha="left", va="bottom", fontsize=6)
    for i in np.flatnonzero(m.attacked):
        ax.plot(i, 1.07, marker="v" if not m.target[i] else "^", markersize=5,
                color="#009E73" if m.reached[i] else "#444444", clip_on=False)
    for i in np.flatnonzero(m.wrongly_flipped):
        ax.plot(i, 1.07, marker="x", markersize=5, color="#CC0000", clip_on=False)
    ax.set_xticks(idx)
    ax.set_xticklabels([str(n) for n in names], rotation=60, ha="right", fontsize=6)
    for lab, a in zip(ax.get_xticklabels(), m.attacked):
        if a:
            lab.set_fontweight("bold")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("probability")
    ax.legend(loc="upper left", ncols=2, frameon=False, bbox_to_anchor=(0, 1.22))


def _trace(ax: Any, trace: Sequence[Mapping[str, Any]]) -> None:
    trace = list(trace)
    if not trace:
        ax.text(0.5, 0.5, "no iterations (already at the target)", ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
        return
    key = next((k for k in ("linf", "best_l2", "l2") if any(isinstance(t.get(k), (int, float)) for t in trace)), None)
    xkey = "iteration" if "iteration" in trace[0] else "step"
    xs = [t.get(xkey, i) + (1 if xkey == "step" else 0) for i, t in enumerate(trace)]
    if key is not None:
        ys = [t.get(key) if isinstance(t.get(key), (int, float)) else np.nan for t in trace]
        ax.plot(xs, ys, marker="o", markersize=3, color="#333333")
        ax.set_ylabel({"linf": "l_inf of r", "best_l2": "best l_2", "l2": "l_2 of r"}[key])
    ax.set_xlabel("iteration" if xkey == "iteration" else "binary-search step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3, linewidth=0.4)


# ---------------------------------------------------------------------------------------------
# Success rate against a budget
# ---------------------------------------------------------------------------------------------

BUDGET_AXES = {"linf": "l_inf budget ([0,1] units)", "l2": "l_2 budget ([0,1] units)", "rmsd": "RMSD budget (0..255)"}
_DASHES = ("-", "--", ":", "-.")


def budget_curves(panels: Mapping[str, Mapping[Any, tuple[Any, Any]]], *, width: str | float = "page") -> Figure:
    """Success rate within a distortion budget, a panel per norm, a curve per run (model, data set,
    attack, label): colour = attack, line style = (model, data set); log budget axes, labelled decades."""
    if not panels:
        raise InvalidInputError("no curves to draw")
    w = _width(width)
    groups = curve_groups(panels)
    with _style():
        fig = Figure(figsize=(w, 2.3), layout="constrained")
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, (norm, curves) in zip(axes, panels.items()):
            for key, (eps, rate) in curves.items():
                attack, name = curve_names(key)
                g = tuple(key[:2]) if isinstance(key, tuple) else ()
                e, s = np.asarray(eps, dtype=float), np.asarray(rate, dtype=float)
                keep = e > 0
                label = name + (f" ({'/'.join(map(str, g))})" if len(groups) > 1 else "")
                ax.step(e[keep], s[keep], where="post", color=ATTACK_COLORS.get(attack, "#333333"),
                        linestyle=_DASHES[groups.index(g) % len(_DASHES)], label=label)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10))
            ax.xaxis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10)))
            ax.xaxis.set_minor_formatter(NullFormatter())  # decades labelled, minor ticks unlabelled
            ax.set_xlabel(BUDGET_AXES.get(norm, norm))
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3, linewidth=0.4, which="major")
        axes[0].set_ylabel("success rate")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(5, len(labels)), frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------


class _style:
    """The paper rcParams while a figure is built (and restored afterwards: the app shares them)."""

    def __enter__(self) -> None:
        self._saved = {k: rcParams[k] for k in _STYLE}
        rcParams.update(_STYLE)

    def __exit__(self, *exc: Any) -> None:
        rcParams.update(self._saved)


def figure_bytes(fig: Figure, fmt: str, *, dpi: int = 300) -> bytes:
    """The figure as PDF, SVG (vector; text kept as text) or PNG at ``dpi``."""
    fmt = str(fmt).lower().strip()
    if fmt not in FORMATS:
        raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 50 <= dpi <= 1200:
        raise InvalidInputError(f"dpi must be an integer from 50 to 1200, got {dpi!r}")
    buf = io.BytesIO()
    meta = {"pdf": {"Creator": "mlalp", "CreationDate": None}, "svg": {"Date": None}, "png": {}}[fmt]
    with _style():
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta)
    return buf.getvalue()
