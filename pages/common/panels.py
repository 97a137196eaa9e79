"""Showing one result: metrics, images, per-channel distortion surfaces, confidence bars, the
trace, and download buttons."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import streamlit as st
import torch

from mlalp_core.attacks import AttackResult
from mlalp_core.errors import MlalpError, exception_line
from mlalp_core.experiments.metrics import attack_metrics
from mlalp_core.viz.export import FORMATS, download_config, safe_filename
from mlalp_core.viz.figures import (
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
from mlalp_core.viz.paper import RASTER_ABOVE, figure_bytes, result_panel

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
    note: str = ""  # what was returned and why, when the target was not reached
    stopped: bool = False  # a Stop kept the best iterate found so far

    @classmethod
    def from_result(cls, res: AttackResult, label_names, origin: str = "") -> ResultView:
        return cls(res.attack, tuple(label_names), res.threshold, res.x[0], res.x_adv[0], res.perturbation[0],
                   res.probs_clean[0], res.probs_adv[0], res.target[0], attack_metrics(res)[0], res.trace[0], origin,
                   res.notes[0] if res.notes else "", res.stopped)


def chart(fig: go.Figure, name: str, key: str) -> None:
    """An interactive chart; the camera icon in its modebar downloads an SVG from the browser.
    Paper figures (vector PDF/SVG, PNG at a dpi) come from :func:`paper_export`."""
    st.plotly_chart(fig, theme=None, key=key,
                    config=download_config(name, "svg", height=fig.layout.height or None))


def paper_export(make: Callable[[dict[str, Any]], Any], name: str, key: str, *, surfaces: bool = True,
                 extra: Callable[[], dict[str, Any]] | None = None) -> None:
    """"Export for a paper": the options, a button that draws the matplotlib figure (with a
    spinner and its time), then the download; the file is kept until the options change.

    The section is open while its button is being handled or a file of it is held: a page whose
    elements moved since the last run (a Run adds its progress box above) draws the section anew,
    and Streamlit would draw it shut over the download button just made."""
    made = st.session_state.setdefault("_exports", {})
    is_open = bool(st.session_state.get(f"{key}_xgo")) or any(k[0] == key for k in made)
    with st.expander("Export for a paper (PDF, SVG or PNG, drawn on the server; no browser needed)",
                     expanded=is_open):
        c1, c2, c3, c4 = st.columns(4)
        fmt = c1.selectbox("Format", list(FORMATS), key=f"{key}_xfmt")
        width = c2.selectbox("Width", ["page", "column"], key=f"{key}_xwidth",
                             format_func={"page": "full page (7.16 in)", "column": "one column (3.5 in)"}.get)
        dpi = int(c3.selectbox("dpi (PNG; rasters in PDF/SVG)", [300, 600, 150], key=f"{key}_xdpi"))
        options: dict[str, Any] = {"width": width}
        if surfaces:
            options["resolution"] = int(c4.selectbox(
                "Surface cells per side", [32, 48, 64, 96, 128], key=f"{key}_xres",
                help=f"Surfaces are vector polygons up to {RASTER_ABOVE} cells per side, rasters above (smaller files)."))
        options.update(extra() if extra else {})
        ident = (key, fmt, dpi, tuple(sorted(options.items())))
        if st.button("Make the file", key=f"{key}_xgo", icon=":material/draw:"):
            t0 = time.perf_counter()
            try:
                with st.spinner(f"Drawing the {fmt.upper()} ..."):
                    data = figure_bytes(make(options), fmt, dpi=dpi)
            except MlalpError as exc:
                st.error(f"The figure could not be drawn: {exc}")
                return
            except (MemoryError, RuntimeError, ValueError) as exc:  # matplotlib's own failures
                st.error(f"The figure could not be drawn: {type(exc).__name__}: {exception_line(exc)}")
                return
            made.clear()  # one file at a time per session: they can be large
            made[ident] = (data, time.perf_counter() - t0)
        if ident in made:
            data, seconds = made[ident]
            st.download_button(f"Download {safe_filename(name)}.{fmt} ({len(data) / 1e6:.2f} MB, drawn in "
                               f"{seconds:.1f} s)", data=data, file_name=f"{safe_filename(name)}.{fmt}",
                               mime=FORMATS[fmt], on_click="ignore", key=f"{key}_xdl", icon=":material/download:")


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
                   f"{{{', '.join(after)}}} ({m.get('labels_wrong', '?')} label(s) wrong)."
                   + (f" Why: {view.note[0].lower() + view.note[1:]}" if view.note else ""))
    if view.stopped:
        st.info("Stopped early: this is the best iterate found before the Stop. Press Run to run it to the end.")
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
                        help="The browser shows a pooled surface (WebGL); paper exports choose their own resolution.")
    z = z_range_for(view.r, zmode, custom_z)
    surf = distortion_surfaces(view.r, z_range=z, pooling=pooling, max_side=None if side == "full" else int(side))
    chart(surf, f"{stem}_surfaces", f"{page}_surf")

    st.subheader("Label confidences")
    bars = confidence_bars(view.label_names, view.probs_clean, view.probs_adv, view.target, view.threshold)
    chart(bars, f"{stem}_confidences", f"{page}_bars")

    st.subheader("Per-iteration trace")
    tr = trace_chart(view.trace, attack=view.attack, threshold=view.threshold)
    chart(tr, f"{stem}_trace", f"{page}_trace")
    with st.expander("Raw trace"):
        st.json(view.trace, expanded=False)

    st.subheader("For a paper")
    title = f"{display_name(view.attack)}: {view.origin}" if view.origin else display_name(view.attack)

    def make(options: dict[str, Any]):
        return result_panel(x=view.x, x_adv=view.x_adv, r=view.r, label_names=view.label_names,
                            probs_clean=view.probs_clean, probs_adv=view.probs_adv, target=view.target,
                            threshold=view.threshold, trace=view.trace, title=title, z_range=z, pooling=pooling,
                            **options)

    paper_export(make, f"{stem}_result", f"{page}_paper")
