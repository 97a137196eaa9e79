"""Static figures for papers (matplotlib, no browser): Fig. 1 for all five attacks as true vector
PDF and SVG and as PNG at 300 dpi; the single-result panel; budget curves; the raster fallback."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
import zlib

import pytest
import torch

import mlalp_core as ml
from mlalp_core.errors import InvalidInputError
from mlalp_core.viz.paper import GridRow, budget_curves, fig1_grid, figure_bytes, result_panel

QUICK = {"mla-lp": {}, "ml-deepfool": {"max_iterations": 3},
         "ml-cw": {"max_iterations": 30, "binary_search_steps": 2},
         "ml-rank1": {"max_iterations": 30, "binary_search_steps": 2},
         "ml-rank2": {"max_iterations": 30, "binary_search_steps": 2}}


@pytest.fixture(scope="module")
def five():
    """All five attacks on one demo image (scene_005, hide-one)."""
    model = ml.load_model("demo-gcn", device="cpu")
    data = ml.load_dataset("demo")
    x = ml.stack_images(data, [5], model.input_size)
    target = ml.hide_one(data.labels()[5:6], seed=0, example_ids=[5])
    results = {a: ml.attack(a, model, x, target, **kw) for a, kw in QUICK.items()}
    return model, x, results


def _pdf_ops(data: bytes) -> bytes:
    streams = re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S)
    return b"".join(zlib.decompress(s) for s in streams if s[:2] == b"x\x9c")


def _grid(five, **kw):
    model, x, results = five
    rows = [GridRow(ml.ATTACKS[a].display_name, r.perturbation[0], r.x_adv[0], caption="labels after")
            for a, r in results.items()]
    return fig1_grid(rows, original=x[0], original_caption="three, seven, eight", **kw)


def test_fig1_exports_as_vector_pdf_and_svg_and_png_at_300_dpi(five):
    fig = _grid(five)
    pdf = figure_bytes(fig, "pdf")
    assert pdf.startswith(b"%PDF")
    ops = _pdf_ops(pdf)
    assert len(re.findall(rb"[-\d.]+ [-\d.]+ m\b", ops)) > 5 * 3 * 500  # surfaces as vector polygons
    assert len(re.findall(rb"\bTJ?\b", ops)) > 20  # text as text: labels, ticks, row names
    svg = figure_bytes(fig, "svg")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    paths = root.iter(f"{ns}path")
    assert sum(1 for _ in paths) > 5 * 3 * 500
    images = list(root.iter(f"{ns}image"))
    assert len(images) == 7  # the original, five adversarial images, the colour bar; no surface is a raster
    texts = " ".join("".join(t.itertext()) for t in root.iter(f"{ns}text"))
    assert all(name in texts for name in ("MLA-LP", "ML-DeepFool", "ML-CW", "ML-Rank1", "ML-Rank2"))
    png = figure_bytes(fig, "png", dpi=300)
    assert png.startswith(b"\x89PNG")
    i = png.find(b"pHYs")
    assert struct.unpack(">IIB", png[i + 4:i + 13]) == (11811, 11811, 1)  # 300 dpi in pixels per metre
    w, h = struct.unpack(">II", png[16:24])
    assert abs(w - fig.get_figwidth() * 300) <= 1 and abs(h - fig.get_figheight() * 300) <= 1


def test_fig1_shares_one_z_range_by_default_and_says_so(five):
    shared = _grid(five)
    own = _grid(five, shared_z=False)
    assert shared._mlalp_meta["shared"] and len(set(shared._mlalp_meta["z_ranges"])) == 1
    assert shared._mlalp_meta["z_ranges"][0] == max(own._mlalp_meta["z_ranges"])
    svg = figure_bytes(shared, "svg").decode()
    z = shared._mlalp_meta["z_ranges"][0]
    assert "for all" in svg and f"{z:.3g}" in svg


def test_surfaces_above_the_raster_threshold_are_embedded_as_images(five):
    fig = _grid(five, resolution=96)  # > RASTER_ABOVE: the documented raster fallback
    root = ET.fromstring(figure_bytes(fig, "svg"))
    images = list(root.iter("{http://www.w3.org/2000/svg}image"))
    assert len(images) == 7 + 15


def test_the_result_panel_and_budget_curves(five):
    model, x, results = five
    r = results["mla-lp"]
    fig = result_panel(x=r.x[0], x_adv=r.x_adv[0], r=r.perturbation[0], label_names=model.label_names,
                       probs_clean=r.probs_clean[0], probs_adv=r.probs_adv[0], target=r.target[0], trace=r.trace[0],
                       title="MLA-LP", width="column")
    assert fig.get_figwidth() == pytest.approx(3.5)
    assert figure_bytes(fig, "pdf").startswith(b"%PDF")
    curves = {"linf": {("demo-gcn", "demo", "mla-lp"): ([0.01, 0.02, 0.03], [0.2, 0.6, 1.0]),
                       ("demo-gcn", "demo", "ml-cw"): ([0.03, 0.1], [0.5, 1.0])}}
    fig = budget_curves(curves)
    svg = figure_bytes(fig, "svg").decode()
    assert "MLA-LP" in svg and "ML-CW" in svg and "success rate" in svg


@pytest.mark.parametrize("kw, words", [({"resolution": 2}, "resolution"), ({"width": "poster"}, "width")])
def test_bad_figure_settings_are_one_line(five, kw, words):
    with pytest.raises(InvalidInputError, match=words):
        _grid(five, **kw)
    with pytest.raises(InvalidInputError, match="format"):
        figure_bytes(_grid(five), "eps")
    with pytest.raises(InvalidInputError, match="dpi"):
        figure_bytes(_grid(five), "png", dpi=10)
    assert torch.is_tensor(five[1])


@pytest.mark.parametrize("width", ["page", "column"])
def test_the_result_panels_text_stays_clear_of_its_bars(five, width):
    """No label of the panel is drawn on a bar, even when every label is confident (the threshold's
    name once sat on the line, over the first bars); the threshold is named in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import Rectangle
    from matplotlib.text import Text

    model, x, results = five
    r = results["mla-lp"]
    confident = torch.full_like(r.probs_clean[0], 0.97)
    for probs in (r.probs_clean[0], confident):
        fig = result_panel(x=r.x[0], x_adv=r.x_adv[0], r=r.perturbation[0], label_names=model.label_names,
                           probs_clean=probs, probs_adv=probs, target=r.target[0], trace=r.trace[0],
                           title="MLA-LP", width=width)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        bars_ax = next(ax for ax in fig.axes if ax.name == "rectilinear" and ax.containers)
        patches = [p for c in bars_ax.containers for p in c if isinstance(p, Rectangle)]
        assert len(patches) == 2 * model.num_labels  # before and after, per label
        bars = [p.get_window_extent(renderer) for p in patches]
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        on_bars = [(t.get_text(), i) for t in texts for i, b in enumerate(bars)
                   if t.get_window_extent(renderer).overlaps(b.shrunk(0.98, 0.98))]
        assert not on_bars, on_bars
        assert "threshold 0.5" in [t.get_text() for t in bars_ax.get_legend().get_texts()]
        # nor on each other: every upright text (titles, legend, axis and tick labels; the slanted
        # label names have slanted boxes), the 3-D scenes' own labels aside
        upright = [(t.get_text(), t.get_window_extent(renderer)) for t in texts
                   if t.get_rotation() in (0.0, 90.0) and (t.axes is None or t.axes.name != "3d")]
        clashes = [(a, b) for i, (a, ea) in enumerate(upright) for b, eb in upright[i + 1:]
                   if ea.shrunk(0.9, 0.8).overlaps(eb.shrunk(0.9, 0.8))]
        assert not clashes, clashes
