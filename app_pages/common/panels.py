"""Showing one result: metrics, images, per-channel distortion surfaces, confidence bars, the
trace, and download buttons."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import streamlit as st
import torch

from mlalp_core.attacks import (
    AttackResult,
)
from mlalp_core.experiments.metrics import attack_metrics
from mlalp_core.viz.export import FORMATS, download_config, export_status, figure_bytes, safe_filename
from mlalp_core.viz.figures import (
    PAPER,
    POOLINGS,
    Z_MODES,
    confidence_bars,
    display_name,
    distortion_surfaces,
    image_row,
    perturbation_image,
    predicted_names,
    trace_chart,
    z_range_for,
)

# ---------------------------------------------------------------------------------------------
# Showing results
# ---------------------------------------------------------------------------------------------


@dataclass
class ResultView:
    """What the result panels show, from a fresh run or from the results store."""

    attack: str
    label_names: tuple[str, ...]
    threshold: float
    x: torch.Tensor  # (3, H, W)
    x_adv: torch.Tensor  # (3, H, W)
    r: torch.Tensor  # (3, H, W)
    probs_clean: torch.Tensor
    probs_adv: torch.Tensor
    target: torch.Tensor
    metrics: dict[str, Any]
    trace: list[dict]
    origin: str = ""

    @classmethod
    def from_result(cls, res: AttackResult, label_names, origin: str = "") -> ResultView:
        return cls(res.attack, tuple(label_names), res.threshold, res.x[0], res.x_adv[0], res.perturbation[0],
                   res.probs_clean[0], res.probs_adv[0], res.target[0], attack_metrics(res)[0], res.trace[0], origin)


@st.cache_resource(ttl=600, show_spinner=False)
def _export_ok() -> tuple[bool, str]:
    return export_status()


def chart(fig: go.Figure, name: str, key: str, *, export: Callable[[], go.Figure] | None = None,
          formats: tuple[str, ...] = ("svg", "png")) -> None:
    """A chart with the browser's SVG download in its modebar and, when the server has a
    browser for kaleido, server-side download buttons (publication size and fonts)."""
    st.plotly_chart(fig, theme=None, key=key,
                    config=download_config(name, "svg", height=fig.layout.height or None))
    ok, why = _export_ok()
    if not ok:
        st.caption(f"Camera icon: SVG in the browser. {why[0].upper() + why[1:]}.")
        return
    cols = st.columns(len(formats) + 3)
    for c, fmt in zip(cols, formats):
        def data(fmt: str = fmt) -> bytes:
            return figure_bytes(export() if export else fig, fmt, style=PAPER, keep_browser=True)

        c.download_button(fmt.upper(), data=data, file_name=f"{safe_filename(name)}.{fmt}",
                          mime=FORMATS[fmt],
                          on_click="ignore", key=f"{key}_{fmt}", icon=":material/download:")


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def show_metrics(view: ResultView) -> None:
    m = view.metrics
    ok = bool(m.get("success"))
    names = view.label_names
    after = predicted_names(names, view.probs_adv, view.threshold)
    wanted = [names[j] for j in view.target.nonzero().flatten().tolist()]
    if ok:
        st.success(f"{display_name(view.attack)} reached the target: the model now predicts "
                   f"{{{', '.join(after)}}}.")
    else:
        st.warning(f"{display_name(view.attack)} did not reach y* = {{{', '.join(wanted)}}}: the model predicts "
                   f"{{{', '.join(after)}}} ({m.get('labels_wrong', '?')} label(s) wrong).")
    cols = st.columns(7)
    cols[0].metric("success", "yes" if ok else "no")
    cols[1].metric("l_2", _fmt(m.get("l2"), ".4f"), help="||r||_2 in [0,1] pixel units")
    cols[2].metric("l_inf", _fmt(m.get("linf"), ".5f"), help="max |r| in [0,1] pixel units")
    cols[3].metric("RMSD (0..255)", _fmt(m.get("rmsd"), ".4f"), help="255 x RMS(r): the true RMSD on 0..255")
    cols[4].metric("RMSD (paper)", _fmt(m.get("rmsd_paper"), ".4f"),
                   help="127.5 x RMS(r): the scale printed in the paper's Table III")
    cols[5].metric("iterations", str(m.get("iterations", "-")))
    cols[6].metric("time (s)", _fmt(m.get("time_s"), ".2f"))


def show_result(view: ResultView, page: str, name_stem: str) -> None:
    """Images, metrics, surfaces (with their controls), bars and the trace of one result."""
    show_metrics(view)
    if view.origin:
        st.caption(view.origin)
    stem = safe_filename(name_stem)
    pimg, gain = perturbation_image(view.r)
    st.subheader("Images")
    imgs = image_row([view.x, view.x_adv, pimg], ["original", "adversarial", f"perturbation x{gain:.3g} (0 = grey)"])
    chart(imgs, f"{stem}_images", f"{page}_img")

    st.subheader("Distortion per channel")
    c1, c2, c3 = st.columns([2, 1, 1])
    zmode = c1.radio("z-range", list(Z_MODES), format_func=Z_MODES.get, key=f"{page}_zmode", horizontal=True)
    custom_z = None
    if zmode == "custom":
        custom_z = c1.number_input("half-width of the z-range ([0,1] units)", min_value=1e-6, max_value=2.0,
                                   value=0.03, format="%.4f", key=f"{page}_zcustom")
    pooling = c2.radio("pooling", list(POOLINGS), format_func=POOLINGS.get, key=f"{page}_pool")
    side = c3.selectbox("max side shown", [128, 64, 32, "full"], key=f"{page}_side",
                        help="The browser shows a pooled surface; the SVG/PNG buttons export full resolution.")
    z = z_range_for(view.r, zmode, custom_z)
    surf = distortion_surfaces(view.r, z_range=z, pooling=pooling, max_side=None if side == "full" else int(side))
    r = view.r
    chart(surf, f"{stem}_surfaces", f"{page}_surf",
          export=lambda: distortion_surfaces(r, z_range=z, pooling=pooling, max_side=None, style=PAPER))

    st.subheader("Label confidences")
    bars = confidence_bars(view.label_names, view.probs_clean, view.probs_adv, view.target, view.threshold)
    chart(bars, f"{stem}_confidences", f"{page}_bars")

    st.subheader("Per-iteration trace")
    tr = trace_chart(view.trace, attack=view.attack, threshold=view.threshold)
    chart(tr, f"{stem}_trace", f"{page}_trace")
    with st.expander("Raw trace"):
        st.json(view.trace, expanded=False)
