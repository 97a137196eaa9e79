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
