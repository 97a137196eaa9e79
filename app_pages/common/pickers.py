"""Choosing what to attack: the gallery browser or an upload, the labels beside the image, and
the target y* by label names (an impossible choice explained before any run)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st
import torch

from mlalp_core.attacks import attack_class
from mlalp_core.attacks.targets import add, build_target, custom, hide, hide_one
from mlalp_core.data.base import check_labels_match
from mlalp_core.data.images import MAX_FILE_BYTES, open_image, pil_to_tensor, tensor_to_pil
from mlalp_core.device import resolve_device
from mlalp_core.errors import MlalpError
from mlalp_core.viz.export import download_config
from mlalp_core.viz.figures import confidence_bars, predicted_names

from .sidebar import UPLOAD, Globals, get_dataset, thumbnail

IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm"]

# ---------------------------------------------------------------------------------------------
# Image choice
# ---------------------------------------------------------------------------------------------


@dataclass
class Picked:
    key: str  # identity for the caches, e.g. "demo/gallery/scene_003" or "upload/<hash>"
    x: torch.Tensor  # (1, 3, H, W) at the model's input size, in [0,1]
    labels: torch.Tensor | None  # (l,) bool ground truth; None for an upload
    title: str
    index: int  # position in the data set (0 for uploads): hide-one's seed uses it
    dataset: str


def _set_index(page: str, i: int) -> None:
    st.session_state[f"{page}_index"] = i
    st.session_state["sel_index"] = i


def pick_image(g: Globals, model, page: str) -> Picked | None:
    """The gallery browser or the upload box, depending on the sidebar's data source."""
    if g.dataset == UPLOAD:
        return _pick_upload(model, page)
    ds = get_dataset(g)
    if ds is None:
        return None
    try:
        check_labels_match(g.model, model.label_names, g.dataset, ds.label_names)
    except MlalpError as exc:
        st.error(f"{exc}, or another data source, in the sidebar.")
        return None
    n = len(ds)
    ids = ds.ids()
    labels = ds.labels().bool()
    key = f"{page}_index"
    wanted = st.query_params.get("image")  # a link such as ?image=scene_009 opens that image
    if wanted is not None and st.session_state.get("_query_image") != wanted:
        st.session_state["_query_image"] = wanted
        if wanted in ids:
            _set_index(page, ids.index(wanted))
            st.session_state.pop(f"{page}_gallery_page", None)
        else:
            st.warning(f"The link asks for image {wanted!r}, which {g.dataset} does not hold; showing another.")
    if key not in st.session_state or not 0 <= st.session_state[key] < n:
        st.session_state[key] = min(int(st.session_state.get("sel_index", 0)), n - 1)
    per_page = 8
    with st.expander(f"Gallery: {g.dataset} ({n} images)", expanded=True):
        pages = max(1, -(-n // per_page))
        gp_key = f"{page}_gallery_page"
        if gp_key not in st.session_state or not 1 <= st.session_state[gp_key] <= pages:
            st.session_state[gp_key] = st.session_state[key] // per_page + 1
        gp = st.number_input("Gallery page", 1, pages, key=gp_key)
        cols = st.columns(per_page)
        for j in range(per_page):
            i = (int(gp) - 1) * per_page + j
            if i >= n:
                break
            with cols[j]:
                st.image(thumbnail(g.dataset, g.split, i), caption=ids[i], width="stretch")
                st.button("Pick", key=f"{page}_pick_{i}", on_click=_set_index, args=(page, i), width="stretch",
                          type="primary" if i == st.session_state[key] else "secondary")

    def describe(i: int) -> str:
        names = [ds.label_names[j] for j in labels[i].nonzero().flatten().tolist()]
        return f"{i}: {ids[i]} ({', '.join(names) or 'no label'})"

    index = st.selectbox("Image", list(range(n)), format_func=describe, key=key)
    st.session_state["sel_index"] = index
    x = ds.image(index, model.input_size)[None]
    return Picked(f"{g.dataset}/{g.split}/{ids[index]}", x, labels[index], ids[index], int(index), g.dataset)


def _pick_upload(model, page: str) -> Picked | None:
    up = st.file_uploader(
        f"Upload an image (any size or colour mode; it is resized to the model's {model.input_size[0]}x"
        f"{model.input_size[1]})", type=IMAGE_TYPES, key=f"{page}_upload",
        max_upload_size=MAX_FILE_BYTES // 2**20,
    )
    if up is None:
        st.info("Upload an image to attack it, or pick a gallery in the sidebar.")
        return None
    data = up.getvalue()
    try:
        img, notes = open_image(data, name=up.name, size=model.input_size)
        x = pil_to_tensor(img, model.input_size)[None]
    except MlalpError as exc:  # said for this file only: a later upload starts a fresh run of the page
        st.error(f"{up.name}: {exc}. Upload a PNG, JPEG, BMP, GIF, TIFF or WebP image of at most "
                 f"{MAX_FILE_BYTES // 2**20} MB.")
        return None
    digest = hashlib.sha256(data).hexdigest()[:16]
    h, w = model.input_size
    st.caption(f"{up.name}: {img.width}x{img.height} pixels, resized to {w}x{h}, what the model sees:")
    c1, c2 = st.columns(2)
    c1.image(img, caption=f"uploaded ({img.width}x{img.height})", width="stretch")
    c2.image(tensor_to_pil(x[0]), caption=f"model input ({w}x{h})", width="stretch")
    for note in notes:  # what loading did to the file (flattened, one frame, stretched)
        st.info(f"{up.name}: {note}.")
    factor = max(h / img.height, w / img.width)
    if factor >= 2:
        st.warning(f"{up.name} is {img.width}x{img.height} pixels, much smaller than the model's {w}x{h}: it is "
                   f"upscaled {factor:.3g}x, so the model sees a blurry image; its predictions and the attack are "
                   "about that image.")
    return Picked(f"upload/{digest}", x, None, up.name, 0, UPLOAD)


# ---------------------------------------------------------------------------------------------
# Predictions and labels
# ---------------------------------------------------------------------------------------------


def pick_image_and_show_labels(g: Globals, model, page: str):
    """The image picker with the labels beside it; (picked, clean probabilities), or stops."""
    left, right = st.columns([3, 2])
    with left:
        picked = pick_image(g, model, page)
    if picked is None:
        st.stop()
    probs = clean_probabilities(g, model, picked)
    with right:
        st.markdown(f"**{picked.title}**")
        label_table(model.label_names, probs, g.threshold, picked.labels)
    return picked, probs


def clean_probabilities(g: Globals, model, picked: Picked) -> torch.Tensor:
    """(l,) probabilities of the clean image, computed once per (model, device, image)."""
    cache = st.session_state.setdefault("_probs", {})
    key = (g.model, g.device, picked.key)
    if key not in cache:
        with torch.no_grad():
            dev = resolve_device(g.device)
            cache[key] = model.probabilities(picked.x.to(dev))[0].cpu()
    return cache[key]


def label_table(names, probs: torch.Tensor, threshold: float, truth: torch.Tensor | None) -> None:
    pred = set(predicted_names(names, probs, threshold))
    data = {"label": list(names), "probability": [float(p) for p in probs], "predicted": [n in pred for n in names]}
    if truth is not None:
        data["ground truth"] = [bool(t) for t in truth]
    st.dataframe(pd.DataFrame(data), hide_index=True, width="stretch",
                 column_config={"probability": st.column_config.ProgressColumn(
                     "probability", min_value=0.0, max_value=1.0, format="%.4f")})


# ---------------------------------------------------------------------------------------------
# Target y*
# ---------------------------------------------------------------------------------------------

TARGET_MODES = {
    "hide_one": "hide one positive label at random (the paper)",
    "hide": "hide chosen labels",
    "add": "add chosen labels",
    "hide_all": "hide every label",
    "show_k": "show k more labels",
    "show_many": "show as many labels as possible",
    "custom": "choose the whole label set",
}


@dataclass
class Target:
    tensor: torch.Tensor  # (1, l) bool
    summary: str
    hidden: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)


def pick_target(model, picked: Picked, probs: torch.Tensor, threshold: float, page: str) -> Target | None:
    """y* chosen by label names; an impossible choice is explained here, before any run."""
    names = list(model.label_names)
    pred = probs[None] >= threshold
    positives = predicted_names(names, probs, threshold)
    negatives = [n for n in names if n not in positives]
    if picked.labels is not None and not bool((pred[0] == picked.labels).all()):
        wrong = [names[j] for j in (pred[0] != picked.labels).nonzero().flatten().tolist()]
        st.info(f"The model's prediction differs from the ground truth on {', '.join(wrong)}. Targets are built "
                "from the prediction (what the attack changes); the paper attacks only images the model gets right.")
    mode = st.radio("Target y*", list(TARGET_MODES), format_func=TARGET_MODES.get, key=f"{page}_tmode",
                    horizontal=True)
    # the label choices of every mode are kept outside the widgets, so switching modes loses nothing
    kept = st.session_state.setdefault("_target_choices", {}).setdefault((page, picked.key), {})

    def choose(label: str, options: list[str], wkey: str, default: list[str]) -> list[str]:
        st.session_state[wkey] = [o for o in kept.get(wkey, default) if o in options]
        return st.multiselect(label, options, key=wkey, on_change=_keep_choice, args=(kept, wkey))

    try:
        if mode == "hide_one":
            seed = st.number_input("Seed", 0, 10**6, 0, key=f"{page}_tseed",
                                   help="hide-one draws the label from this seed and the image's index")
            if not positives:
                st.warning(f"The model predicts no label for {picked.title}: there is nothing to hide. Choose "
                           "'add chosen labels' instead.")
                return None
            t = hide_one(pred, seed=int(seed), example_ids=[picked.index])
        elif mode == "hide":
            t = hide(pred, choose("Labels to hide", positives, f"{page}_thide", positives[:1]), names)
        elif mode == "add":
            t = add(pred, choose("Labels to add", negatives, f"{page}_tadd", []), names)
        elif mode == "hide_all":
            t = build_target("hide-all", pred)
        elif mode == "show_k":
            k = st.number_input("k (labels to show)", 1, max(1, len(negatives)), 1, key=f"{page}_tk",
                                help="k absent labels, chosen at random (seeded by the image's index)")
            t = build_target(f"show-k:{int(k)}", pred, example_ids=[picked.index])
        elif mode == "show_many":
            t = build_target("show-many", pred)
        else:
            keep = choose("Labels present after the attack", names, f"{page}_tcustom", positives)
            t = custom(pred, torch.tensor([[n in keep for n in names]]))
    except MlalpError as exc:
        st.warning(f"This target cannot be attacked on {picked.title}: {exc}. Choose other labels.")
        return None
    hidden = [names[j] for j in (pred[0] & ~t[0]).nonzero().flatten().tolist()]
    added = [names[j] for j in (~pred[0] & t[0]).nonzero().flatten().tolist()]
    after = [names[j] for j in t[0].nonzero().flatten().tolist()]
    parts = ([f"hide **{', '.join(hidden)}**"] if hidden else []) + ([f"add **{', '.join(added)}**"] if added else [])
    summary = f"{' and '.join(parts)}; y* = {{{', '.join(after)}}}"
    st.markdown(f"Target: {summary}")
    return Target(t, summary, hidden, added)


def _keep_choice(kept: dict, wkey: str) -> None:
    kept[wkey] = list(st.session_state[wkey])


def target_preview(names, probs: torch.Tensor, target: Target, threshold: float) -> None:
    """The clean probabilities with the labels y* flips marked (drawn before any run, which also
    loads the browser's plotting code ahead of the first result)."""
    fig = confidence_bars(names, probs, None, target.tensor[0], threshold)
    fig.update_layout(height=300, margin=dict(l=40, r=10, t=30, b=30))
    st.plotly_chart(fig, theme=None, key="target_preview", config=download_config("target_preview", "svg"))


def target_notes(target: Target, attack: str) -> list[str]:
    """Warnings about a target that an attack cannot pursue (the attack says; shown before running)."""
    problem = attack_class(attack).target_problem(target.tensor[0])
    return [f"{problem}; choose a target that keeps at least one label on each side."] if problem else []


