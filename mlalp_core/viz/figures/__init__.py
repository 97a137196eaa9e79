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

One module per kind of figure (:mod:`.surfaces`, :mod:`.labels`, :mod:`.trace`, :mod:`.images`,
:mod:`.grid`, :mod:`.curves`), on :mod:`.pooling` (a perturbation made ready to draw) and
:mod:`.style` (colours, names, fonts); the names below are the package's interface.
"""

from __future__ import annotations

from .curves import BUDGET_AXES, budget_curves_figure
from .grid import GridRow, figure1_grid
from .images import adversarial_image, image_row, perturbation_image, png_data_uri
from .labels import LabelMarks, confidence_bars, label_marks, predicted_names
from .pooling import (
    DEFAULT_MAX_SIDE,
    PAPER_Z_RANGE,
    POOLINGS,
    Z_MODES,
    PooledPerturbation,
    Pooling,
    auto_z_range,
    pool2d,
    pool_factor,
    pool_perturbation,
    z_range_for,
)
from .style import ATTACK_COLORS, PAPER, SCREEN, PublicationStyle, apply_style, display_name, with_style
from .surfaces import CHANNELS, COLORSCALE, distortion_surfaces
from .trace import TRACE_FIELDS, trace_chart

__all__ = [
    "ATTACK_COLORS", "BUDGET_AXES", "CHANNELS", "COLORSCALE", "DEFAULT_MAX_SIDE", "PAPER", "PAPER_Z_RANGE", "POOLINGS",
    "SCREEN", "TRACE_FIELDS", "Z_MODES", "GridRow", "LabelMarks", "PooledPerturbation", "Pooling", "PublicationStyle",
    "adversarial_image", "apply_style", "auto_z_range", "budget_curves_figure", "confidence_bars", "display_name",
    "distortion_surfaces", "figure1_grid", "image_row", "label_marks", "perturbation_image", "png_data_uri",
    "pool2d", "pool_factor", "pool_perturbation", "predicted_names", "trace_chart", "with_style", "z_range_for",
]
