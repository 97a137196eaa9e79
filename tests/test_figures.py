"""Figures on known arrays: pooling, z-ranges, marked labels, the Fig. 1 grid, budget curves, and
export (the server-side export runs only where a Chromium is installed)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from mlalp_core.errors import InvalidInputError
from mlalp_core.experiments.reporting import budget_curves
from mlalp_core.viz import export as E
from mlalp_core.viz import figures as F


def _decode(uri: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------


def test_maxabs_pooling_keeps_the_signed_value_of_largest_magnitude():
    a = np.array([[0.1, -0.5, 0.2, 0.0],
                  [0.3, 0.4, 0.0, 0.7],
                  [-0.9, 0.0, 0.01, -0.02],
                  [0.8, 0.0, 0.0, 0.015]])
    out = F.pool2d(a, 2, "maxabs")
    np.testing.assert_array_equal(out, [[-0.5, 0.7], [-0.9, -0.02]])


def test_mean_pooling_averages_each_block_including_partial_ones():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 7))
    out = F.pool2d(a, 3, "mean")
    assert out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], a[3 * i:3 * i + 3, 3 * j:3 * j + 3].mean())
    # partial blocks average only the pixels that exist
    np.testing.assert_allclose(out[1, 2], a[3:5, 6:7].mean())


def test_maxabs_on_partial_blocks_and_ties_and_no_pooling():
    a = np.array([[1.0, -2.0, 3.0], [0.0, 0.0, -4.0], [-5.0, 0.0, 0.0]])
    np.testing.assert_array_equal(F.pool2d(a, 2, "maxabs"), [[-2.0, -4.0], [-5.0, 0.0]])
    np.testing.assert_array_equal(F.pool2d(a, 1), a)
    with pytest.raises(InvalidInputError):
        F.pool2d(a, 2, "median")


def test_pool_factor_and_perturbation_shapes():
    assert F.pool_factor(448, 448, 128) == 4
    assert F.pool_factor(96, 96, 128) == 1
    assert F.pool_factor(299, 299, 128) == 3
    assert F.pool_factor(299, 299, None) == 1
    r = torch.zeros(3, 299, 299)
    r[1, 100, 200] = -0.2
    p = F.pool_perturbation(r, 128, "maxabs")
    assert p.values.shape == (3, 100, 100) and p.factor == 3
    assert p.values[1, 33, 66] == pytest.approx(-0.2) and np.abs(p.values).sum() == pytest.approx(0.2)
    assert p.rows[0] == 1.0 and p.rows[-1] == 297.5  # the last block holds only pixels 297 and 298
    full = F.pool_perturbation(r, None)
    assert full.values.shape == (3, 299, 299)


# ---------------------------------------------------------------------------------------------
# Surfaces and ranges
# ---------------------------------------------------------------------------------------------


def test_z_range_defaults_to_the_paper_then_to_the_data():
    small = np.full((3, 4, 4), 0.004)
    assert F.auto_z_range(small) == 0.03
    assert F.auto_z_range(small * 10) == 0.05  # 0.04 -> next round number
    assert F.auto_z_range(np.full((3, 2, 2), -0.97)) == 1.0  # ML-DeepFool-like: the paper's [-1, 1]
    assert F.z_range_for(small, "data") == pytest.approx(0.004)
    assert F.z_range_for(small, "paper") == 0.03
    assert F.z_range_for(small, "custom", 0.1) == 0.1
    with pytest.raises(InvalidInputError):
        F.z_range_for(small, "custom", None)


def test_distortion_surfaces_pool_share_the_range_and_show_the_colour_scale():
    rng = np.random.default_rng(1)
    r = rng.uniform(-0.01, 0.01, (3, 448, 448))
    r[2, 10, 10] = 0.02
    fig = F.distortion_surfaces(r)
    surfaces = [t for t in fig.data if isinstance(t, go.Surface)]
    assert len(surfaces) == 3
    assert all(np.asarray(s.z).shape == (112, 112) for s in surfaces)
    assert np.asarray(surfaces[2].z).max() == pytest.approx(0.02, rel=1e-6)  # max-|r| keeps the spike
    for scene in ("scene", "scene2", "scene3"):
        assert tuple(fig.layout[scene].zaxis.range) == (-0.03, 0.03)
    assert fig.layout.coloraxis.cmin == -0.03 and fig.layout.coloraxis.cmax == 0.03
    assert fig.layout.coloraxis.colorbar.title.text
    assert all(s.coloraxis == "coloraxis" and s.opacity == 0.99 for s in surfaces)

    mean = F.distortion_surfaces(r, pooling="mean", z_range=0.5, max_side=56)
    z = np.asarray(mean.data[0].z)
    assert z.shape == (56, 56)
    np.testing.assert_allclose(z[0, 0], r[0, :8, :8].mean(), rtol=1e-5)
    assert tuple(mean.layout.scene2.zaxis.range) == (-0.5, 0.5)

    full = F.distortion_surfaces(r, max_side=None)
    assert np.asarray(full.data[1].z).shape == (448, 448)
    with pytest.raises(InvalidInputError):
        F.distortion_surfaces(r[:2])


# ---------------------------------------------------------------------------------------------
# Bars, trace, images
# ---------------------------------------------------------------------------------------------


def test_confidence_bars_mark_attacked_and_wrongly_flipped_labels():
    names = ["cat", "dog", "car", "bus"]
    before = torch.tensor([0.9, 0.8, 0.1, 0.2])
    after = torch.tensor([0.3, 0.85, 0.7, 0.1])
    target = torch.tensor([False, True, False, False])  # hide "cat"
    fig = F.confidence_bars(names, before, after, target, threshold=0.5)
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_allclose(by_name["before"].y, before.numpy())
    np.testing.assert_allclose(by_name["after"].y, after.numpy())
    assert list(by_name["attacked (must flip)"].x) == ["cat"]
    assert list(by_name["wrongly flipped"].x) == ["car"]
    assert fig.layout.meta["attacked"] == ["cat"] and fig.layout.meta["wrongly_flipped"] == ["car"]
    line = fig.layout.shapes[0]
    assert line.y0 == line.y1 == 0.5
    assert by_name["threshold 0.5"].line.dash == "dash"  # named in the legend, not on the bars
    assert not fig.layout.annotations
    assert "<b>cat</b>" in fig.layout.xaxis.ticktext

    clean = F.confidence_bars(names, before, before, before >= 0.5, threshold=0.5)
    assert [t.name for t in clean.data] == ["before", "after", "threshold 0.5"]
    with pytest.raises(InvalidInputError):
        F.confidence_bars(names[:3], before, after, target)


def test_trace_chart_panels_for_each_attack_family():
    mlalp = [{"iteration": i, "linf": 0.001 * i, "l2": 0.1 * i, "labels_wrong": 2 - i, "lp_z": 0.001,
              "attacked_probs": {"cat": 0.9 - 0.3 * i}} for i in (1, 2)]
    fig = F.trace_chart(mlalp, attack="mla-lp", threshold=0.5)
    assert fig.layout.meta["fields"] == ["linf", "l2", "labels_wrong"] and fig.layout.meta["attacked_probs"]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[0].y) == [0.001, 0.002]
    assert fig.data[-1].name == "cat"

    cw = [{"step": s, "c": 10.0 ** (5 - s), "best_l2": None if s == 0 else 0.5, "loss": 3.0,
           "best_labels_matching": 9} for s in range(3)]
    fig = F.trace_chart(cw, attack="ml-cw")
    assert list(fig.data[0].x) == [1, 2, 3]  # binary-search steps counted from 1
    assert "c" in fig.layout.meta["fields"]
    c_panel = fig.layout.meta["fields"].index("c") + 1
    assert fig.layout[f"yaxis{'' if c_panel == 1 else c_panel}"].type == "log"

    empty = F.trace_chart([])
    assert len(empty.data) == 0 and "no iterations" in empty.layout.annotations[0].text


def test_images_perturbation_gain_and_clipping():
    x = torch.full((3, 4, 4), 0.98)
    r = torch.zeros(3, 4, 4)
    r[0, 0, 0], r[1, 1, 1] = 0.05, -0.01
    adv = F.adversarial_image(x, r)
    assert adv.max() == 1.0 and adv[1, 1, 1] == pytest.approx(0.97)
    img, gain = F.perturbation_image(r)
    assert gain == pytest.approx(10.0) and img[0, 0, 0] == pytest.approx(1.0) and img[2, 3, 3] == 0.5
    fig = F.image_row([x, adv, img], ["a", "b", "c"])
    assert [t.type for t in fig.data] == ["image"] * 3
    decoded = _decode(fig.data[1].source)
    assert decoded.shape == (4, 4, 3) and decoded[1, 1, 1] == round(0.97 * 255)  # 8-bit PNG of x_adv
    assert F.predicted_names(["a", "b", "c"], [0.7, 0.5, 0.49], 0.5) == ["a", "b"]


# ---------------------------------------------------------------------------------------------
# Fig. 1 and budget curves
# ---------------------------------------------------------------------------------------------


def test_figure1_grid_shares_one_range_by_default_or_gives_each_row_its_own():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (3, 96, 96))
    small = rng.uniform(-0.004, 0.004, (3, 96, 96))
    big = rng.uniform(-0.99, 0.99, (3, 96, 96))
    names = ["MLA-LP", "ML-DeepFool", "ML-CW", "ML-Rank1", "ML-Rank2"]
    rows = [F.GridRow(n, big if n == "ML-DeepFool" else small, F.adversarial_image(x, small), caption="dog")
            for n in names]
    shared = F.figure1_grid(rows, original=x, original_caption="cat, dog", max_side=32)
    assert shared.layout.meta["z_ranges"] == [1.0] * 5 and shared.layout.meta["shared_z"]
    assert {t.coloraxis for t in shared.data if t.type == "surface"} == {"coloraxis"}
    assert shared.layout.coloraxis.cmax == 1.0 and "coloraxis2" not in shared.layout.to_plotly_json()
    assert any("one z-range for all attacks" in a.text for a in shared.layout.annotations)
    fig = F.figure1_grid(rows, original=x, original_caption="cat, dog", max_side=32, shared_z=False)
    surfaces = [t for t in fig.data if t.type == "surface"]
    images = [t for t in fig.data if t.type == "image"]
    assert len(surfaces) == 15 and len(images) == 6
    assert all(np.asarray(s.z).shape == (32, 32) for s in surfaces)
    assert fig.layout.meta["z_ranges"] == [0.03, 1.0, 0.03, 0.03, 0.03]
    assert fig.layout.coloraxis2.cmax == 1.0 and fig.layout.coloraxis.cmax == 0.03
    assert {s.coloraxis for s in surfaces[3:6]} == {"coloraxis2"}
    texts = [a.text for a in fig.layout.annotations]
    assert "<b>ML-DeepFool</b>" in texts and "R channel" in texts
    full = F.figure1_grid(rows[:1], max_side=None)
    assert np.asarray(full.data[0].z).shape == (96, 96)
    with pytest.raises(InvalidInputError):
        F.figure1_grid([])


def test_budget_curves_figure_from_stored_rows():
    rows = []
    for attack, linfs in (("mla-lp", [0.001, 0.002, None]), ("ml-cw", [0.01, 0.02, 0.03])):
        for k, v in enumerate(linfs):
            rows.append({"model": "demo-gcn", "dataset": "demo", "attack": attack, "success": v is not None,
                         "linf": v or 0.5, "l2": (v or 0.5) * 50, "rmsd": 1.0})
    panels = {"linf": budget_curves(rows, "linf"), "l2": budget_curves(rows, "l2")}
    fig = F.budget_curves_figure(panels)
    assert len(fig.data) == 4
    lp = [t for t in fig.data if t.name == "MLA-LP" and t.xaxis == "x"][0]
    assert np.all(np.diff(lp.y) >= 0) and lp.y[-1] == pytest.approx(2 / 3)
    assert np.all(np.asarray(lp.x) > 0)  # a log axis drops the zero budget
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.title.text.startswith("l_2")
    assert sum(t.showlegend is not False for t in fig.data) == 2  # one legend entry per attack


def test_publication_style_sets_size_and_font():
    fig = F.confidence_bars(["a", "b"], [0.9, 0.1], [0.2, 0.1], [False, False])
    out = F.with_style(fig, F.PAPER, width=700, font_size=9)
    assert out.layout.width == 700 and out.layout.font.size == 9 and "Times" in out.layout.font.family
    assert fig.layout.width is None  # the original is untouched


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def test_download_config_for_the_browser_modebar():
    cfg = E.download_config("demo gcn/scene 1: surfaces", "svg", height=400)
    opts = cfg["toImageButtonOptions"]
    assert opts["format"] == "svg" and opts["filename"] == "demo_gcn_scene_1__surfaces"
    assert opts["width"] == F.PAPER.width and opts["height"] == 400
    with pytest.raises(InvalidInputError):
        E.download_config("x", "pdf")  # plotly's browser download has no PDF
