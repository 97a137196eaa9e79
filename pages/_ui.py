"""Shared pieces of the app's pages: the sidebar's global choices, cached loaders, the image and
target pickers, running an attack with live progress, the result views and download buttons.

Streamlit code only: every computation is a call into ``mlalp_core``. User errors are shown
with ``st.error``/``st.warning`` (MlalpError messages are written to be shown as they are);
Streamlit's own control-flow exceptions (rerun, stop) derive from BaseException and pass.
"""

from __future__ import annotations

import hashlib
import runpy
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import mlalp_core  # noqa: F401  (before torch: it sets the OpenMP wait policy)
import torch

from mlalp_core.attacks import PRESETS, AttackResult, attack_class, make_attack, parse_settings
from mlalp_core.data.base import check_labels_match
from mlalp_core.data.images import MAX_FILE_BYTES, load_image, pil_to_tensor, tensor_to_pil
from mlalp_core.data.registry import list_datasets, load_dataset
from mlalp_core.device import available_devices, describe_device, resolve_device
from mlalp_core.errors import MlalpError
from mlalp_core.viz.export import download_config, export_status, figure_bytes, safe_filename
from mlalp_core.viz.figures import (PAPER, POOLINGS, Z_MODES, confidence_bars, display_name,
                                distortion_surfaces, image_row, perturbation_image, predicted_names, trace_chart,
                                z_range_for)
from mlalp_core.lp import backend_status
from mlalp_core.experiments.metrics import attack_metrics
from mlalp_core.models.registry import list_models, load_model
from mlalp_core.settings import load_settings
from mlalp_core.attacks.targets import add, custom, hide, hide_one

UPLOAD = "upload"
#: Most results kept per session (each holds two images and a perturbation).
MAX_CACHED_RESULTS = 48
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm"]

# ---------------------------------------------------------------------------------------------
# Global choices (sidebar)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Globals:
    dataset: str
    split: str | None
    model: str
    device: str
    threshold: float
    dataset_reason: str = ""  # why the data source cannot be used ("" when it can)
    model_reason: str = ""


def _keep(key: str, default: Any, options: list | None = None) -> dict[str, Any]:
    """Give a sidebar widget its last value from a copy kept outside the widget's own state, and
    return the widget arguments that keep that copy current. Streamlit resets a widget's state
    when a page runs without having drawn it before (a page switch in its legacy pages/ mode),
    and the global choices must survive that."""
    kept = st.session_state.get(f"_keep_{key}", st.session_state.get(key, default))
    st.session_state[key] = kept if options is None or kept in options else default
    return {"key": key, "on_change": _save, "args": (key,)}


def _save(key: str) -> None:
    st.session_state[f"_keep_{key}"] = st.session_state[key]


def sidebar() -> Globals:
    """The global choices: data source, model, device, threshold (kept across pages)."""
    sb = st.sidebar
    sb.header("Setup")
    try:
        datasets = {d.name: d for d in list_datasets()}
        models = {m.name: m for m in list_models()}
    except MlalpError as exc:  # a broken mlalp.toml or environment variable
        sb.error(f"{exc}. Fix the setting and reload the page.")
        st.stop()
    sources = list(datasets) + [UPLOAD]

    def source_label(name: str) -> str:
        if name == UPLOAD:
            return "upload an image"
        return name if datasets[name].available else f"{name} (not configured)"

    ds = sb.selectbox("Data source", sources, format_func=source_label, **_keep("g_dataset", sources[0], sources),
                      help="The bundled demo gallery works offline; VOC needs MLALP_VOC_ROOT.")
    split, ds_reason = None, ""
    if ds != UPLOAD:
        info = datasets[ds]
        if not info.available:
            ds_reason = info.reason
            sb.warning(info.reason)
        elif len(info.splits) > 1:
            split = sb.selectbox("Split", info.splits, **_keep(f"g_split_{ds}", info.default_split, list(info.splits)))
        else:
            split = info.default_split
    names = list(models)
    model = sb.selectbox("Model", names, **_keep("g_model", names[0], names),
                         format_func=lambda n: n if models[n].available else f"{n} (not configured)")
    m_reason = "" if models[model].available else models[model].reason
    if m_reason:
        sb.warning(m_reason)
    else:
        size = models[model].input_size
        sb.caption(f"{models[model].description}" + (f"; input {size[0]}x{size[1]}" if size else ""))
    devices = ["auto"] + available_devices()
    device = sb.selectbox("Device", devices, **_keep("g_device", "auto", devices))
    try:
        sb.caption(describe_device(device))
    except MlalpError as exc:
        sb.error(str(exc))
    thr = sb.slider("Threshold", 0.05, 0.95, step=0.01, **_keep("g_threshold", 0.5),
                    help="A label is predicted when its probability is at least this (the paper: 0.5).")
    g = Globals(ds, split, model, device, float(thr), ds_reason, m_reason)
    st.session_state["_globals"] = g
    return g


APP = Path(__file__).resolve().parents[1] / "app.py"


def require_app() -> None:
    """Make sure this page is drawn through app.py (call it first in every page).

    Streamlit still honours its legacy pages/ folder on a server's first run and in AppTest: a
    deep link such as /compare then runs the page file alone, without app.py's navigation and
    sidebar. Running app.py here draws them, and this page inside them; the outer run stops.
    """
    if st.session_state.get("_in_app"):
        return
    runpy.run_path(str(APP), run_name="__main__")
    st.stop()


def current() -> Globals:
    """This run's global choices (drawn by app.py in the sidebar before the page)."""
    g = st.session_state.get("_globals")
    return g if g is not None else sidebar()


# ---------------------------------------------------------------------------------------------
# Cached loaders
# ---------------------------------------------------------------------------------------------


@st.cache_resource(show_spinner="Loading the model ...", max_entries=4)
def _cached_model(name: str, device: str):
    model = load_model(name, device=device)
    # autograd imports this (and sympy) on the first gradient of a process: ~0.5 s that would
    # otherwise land on the first click on Run
    import torch.fx.experimental.symbolic_shapes  # noqa: F401
    return model


@st.cache_resource(show_spinner="Loading the data set ...", max_entries=4)
def cached_dataset(name: str, split: str | None):
    return load_dataset(name, split)


def get_model(g: Globals):
    """The sidebar's model, or None after explaining why it cannot be used."""
    if g.model_reason:
        st.warning(f"The model {g.model} is not available: {g.model_reason}. Configure it (see the Models page) "
                   "or pick another model in the sidebar.")
        return None
    try:
        return _cached_model(g.model, g.device)
    except MlalpError as exc:
        st.error(f"Cannot load {g.model}: {exc}")
        return None
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        st.error(f"The GPU ran out of memory loading {g.model}: pick device 'cpu' in the sidebar or free the GPU.")
        return None


def get_dataset(g: Globals):
    if g.dataset_reason:
        st.warning(f"The data source {g.dataset} is not available: {g.dataset_reason}. Pick the demo gallery or "
                   "upload an image in the sidebar.")
        return None
    try:
        return cached_dataset(g.dataset, g.split)
    except MlalpError as exc:
        st.error(f"Cannot open {g.dataset}: {exc}")
        return None


@st.cache_data(show_spinner=False, max_entries=512)
def _thumbnail(dataset: str, split: str | None, index: int):
    ds = cached_dataset(dataset, split)
    return tensor_to_pil(ds.image(index, (96, 96)))


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
                st.image(_thumbnail(g.dataset, g.split, i), caption=ids[i], width="stretch")
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
        img = load_image(data, name=up.name)
        x = pil_to_tensor(img, model.input_size)[None]
    except MlalpError as exc:
        st.error(f"{exc}. Upload a PNG, JPEG, BMP, GIF, TIFF or WebP image of at most "
                 f"{MAX_FILE_BYTES // 2**20} MB.")
        return None
    digest = hashlib.sha256(data).hexdigest()[:16]
    st.caption(f"{up.name}: {img.width}x{img.height} pixels, resized to {model.input_size[1]}x{model.input_size[0]}")
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
    try:
        if mode == "hide_one":
            seed = st.number_input("Seed", 0, 10**6, 0, key=f"{page}_tseed",
                                   help="hide-one draws the label from this seed and the image's index")
            t = hide_one(pred, seed=int(seed), example_ids=[picked.index])
        elif mode == "hide":
            which = st.multiselect("Labels to hide", positives, default=positives[:1], key=f"{page}_thide")
            t = hide(pred, which, names)
        elif mode == "add":
            which = st.multiselect("Labels to add", negatives, key=f"{page}_tadd")
            t = add(pred, which, names)
        else:
            keep = st.multiselect("Labels present after the attack", names, default=positives, key=f"{page}_tcustom")
            vec = torch.tensor([[n in keep for n in names]])
            t = custom(pred, vec)
    except MlalpError as exc:
        st.warning(f"This target cannot be attacked: {exc}. Choose other labels.")
        return None
    hidden = [names[j] for j in (pred[0] & ~t[0]).nonzero().flatten().tolist()]
    added = [names[j] for j in (~pred[0] & t[0]).nonzero().flatten().tolist()]
    after = [names[j] for j in t[0].nonzero().flatten().tolist()]
    parts = ([f"hide **{', '.join(hidden)}**"] if hidden else []) + ([f"add **{', '.join(added)}**"] if added else [])
    summary = f"{' and '.join(parts)}; y* = {{{', '.join(after)}}}"
    st.markdown(f"Target: {summary}")
    return Target(t, summary, hidden, added)


def target_preview(names, probs: torch.Tensor, target: Target, threshold: float) -> None:
    """The clean probabilities with the labels y* flips marked (drawn before any run, which also
    loads the browser's plotting code ahead of the first result)."""
    fig = confidence_bars(names, probs, None, target.tensor[0], threshold)
    fig.update_layout(height=300, margin=dict(l=40, r=10, t=30, b=30))
    st.plotly_chart(fig, theme=None, key="target_preview", config=download_config("target_preview", "svg"))


def target_notes(target: Target, attack: str) -> list[str]:
    """Warnings about a target that an attack cannot pursue (shown before running)."""
    notes = []
    t = target.tensor[0]
    if attack in ("ml-rank1", "ml-rank2") and (not bool(t.any()) or bool(t.all())):
        side = "no positive" if not bool(t.any()) else "no negative"
        notes.append(f"{display_name(attack)}: y* has {side} label, so its ranking loss is 0 from the start and the "
                     "attack cannot move; choose a target that keeps at least one label on each side.")
    return notes


# ---------------------------------------------------------------------------------------------
# Attack settings
# ---------------------------------------------------------------------------------------------

def _initial_settings(attack: str) -> dict[str, Any]:
    """The paper's settings, with mlalp.toml's ``[attacks.<name>]`` table on top."""
    try:
        overrides = load_settings().attacks.get(attack, {})
    except MlalpError:  # the sidebar has already said what is wrong with the settings
        overrides = {}
    return parse_settings(attack, overrides)


def _kept(page: str, attack: str) -> dict[str, Any]:
    """The settings the user chose for an attack on a page, kept outside any widget's state.

    Streamlit drops a widget's state on a run that does not draw it (an image not uploaded yet
    stops the page before the settings), and the browser may then send back an empty value:
    the kept copy is the truth, written back into the widgets before they are drawn, and only
    the user's own edit (or preset click) changes it.
    """
    all_kept = st.session_state.setdefault("_attack_settings", {})
    key = f"{page}/{attack}"
    if key not in all_kept:
        all_kept[key] = _initial_settings(attack)
    return all_kept[key]


def _setting_key(page: str, attack: str, name: str) -> str:
    return f"{page}_{attack}_{name}"


def _commit_setting(page: str, attack: str, name: str) -> None:
    """A widget's on_change: the new value through the schema, or an error that keeps the old one."""
    errors = st.session_state.setdefault("_setting_errors", {})
    where = _setting_key(page, attack, name)
    try:
        value = attack_class(attack).schema.setting(name).parse(st.session_state[where], attack)
    except MlalpError as exc:
        errors[where] = f"{exc}; kept {_kept(page, attack)[name]!r}"
        return
    errors.pop(where, None)
    _kept(page, attack)[name] = value


def apply_preset(page: str, attacks: list[str], preset: str) -> None:
    """A preset's values into the kept settings (a widget callback: the user's click)."""
    for a in attacks:
        values = _initial_settings(a)
        values.update(PRESETS.get(preset, {}).get(a, {}))
        st.session_state.setdefault("_attack_settings", {})[f"{page}/{a}"] = values


def _setting_widget(setting, key: str, on_change: dict[str, Any]) -> None:
    label, help_ = setting.title, f"{setting.help}. Accepts {setting.allowed()}; the paper: {setting.default}."
    if setting.kind is bool:
        st.checkbox(label, key=key, help=help_, **on_change)
    elif setting.choices:
        st.selectbox(label, setting.choices, key=key, help=help_, **on_change)
    elif setting.kind is int:
        low = None if setting.low is None else int(setting.low) + (1 if setting.low_open else 0)
        high = None if setting.high is None else int(setting.high) - (1 if setting.high_open else 0)
        st.number_input(label, min_value=low, max_value=high, step=1, key=key, help=help_,
                        placeholder="auto" if setting.none_means else None, **on_change)
    else:
        step = abs(setting.default) if setting.default else 0.01
        st.number_input(label, step=float(step), format="%g", key=key, help=help_, **on_change)


def attack_settings(attack: str, page: str) -> dict[str, Any]:
    """Widgets for an attack's settings, drawn from its schema; returns the kept (typed) values."""
    kept = _kept(page, attack)
    errors = st.session_state.setdefault("_setting_errors", {})
    for setting in attack_class(attack).schema:
        key = _setting_key(page, attack, setting.name)
        st.session_state[key] = kept[setting.name]
        _setting_widget(setting, key, {"on_change": _commit_setting, "args": (page, attack, setting.name)})
        if key in errors:
            st.error(errors[key])
    if attack == "mla-lp":
        backend = kept.get("lp_backend", "auto")
        base = "structured" if backend == "auto" else "highs" if backend.startswith("highs") else backend
        ok, why = backend_status().get(base, (True, ""))
        if not ok:
            st.warning(f"LP backend {backend}: {why}. Choose 'auto' (the exact structured solver).")
    return dict(kept)


def settings_differences(attack: str, values: dict[str, Any]) -> str:
    """One line saying which settings differ from the paper's ('' when none do)."""
    schema = attack_class(attack).schema
    diff = schema.differences(values)
    if not diff:
        return ""
    parts = [f"{schema.setting(k).title} {_show(v)} (paper: {_show(p)})" for k, (v, p) in diff.items()]
    return f"{display_name(attack)}: " + ", ".join(parts)


def _show(value: Any) -> str:
    return "auto" if value is None else str(value).lower() if isinstance(value, bool) else f"{value:g}" \
        if isinstance(value, float) else str(value)


def settings_note(where, attacks_values: dict[str, dict[str, Any]]) -> None:
    """Next to a Run button: which settings differ from the paper's, or that none do."""
    lines = [line for a, v in attacks_values.items() if (line := settings_differences(a, v))]
    if lines:
        where.caption("Not the paper's settings: " + "; ".join(lines) + ".")
    else:
        where.caption("Settings: the paper's.")


# ---------------------------------------------------------------------------------------------
# Running, with results cached per session
# ---------------------------------------------------------------------------------------------


def result_key(g: Globals, picked: Picked, target: Target, attack: str, settings: dict[str, Any]) -> tuple:
    return (g.model, g.device, round(g.threshold, 6), picked.key, tuple(target.tensor[0].tolist()), attack,
            tuple(sorted(settings.items())))


def _results() -> OrderedDict:
    return st.session_state.setdefault("_results", OrderedDict())


def cached_result(key: tuple) -> AttackResult | None:
    res = _results().get(key)
    if res is not None:
        _results().move_to_end(key)
    return res


def store_result(key: tuple, result: AttackResult) -> None:
    cache = _results()
    cache[key] = result
    cache.move_to_end(key)
    while len(cache) > MAX_CACHED_RESULTS:
        cache.popitem(last=False)


def interrupted(keys: list[tuple]) -> bool:
    """True (once) when the last run of one of ``keys`` was stopped before it finished."""
    running = st.session_state.pop("_running", None)
    return running is not None and running in keys and cached_result(running) is None


def run_attack(g: Globals, model, attack: str, settings: dict[str, Any], picked: Picked, target: Target,
               key: tuple, *, label: str | None = None) -> AttackResult | None:
    """Run one attack with a live progress bar; None (after an st.error) when it fails.

    A click on Stop (or any other control) reruns the page, which interrupts the attack at its
    next progress report; :func:`interrupted` then says so.
    """
    title = label or display_name(attack)
    try:
        atk = make_attack(attack, model, threshold=g.threshold, device=g.device, **settings)
    except MlalpError as exc:
        st.error(f"{title}: {exc}")
        return None
    st.session_state["_running"] = key
    t0 = time.perf_counter()
    with st.status(f"Running {title} ...", expanded=True) as status:
        bar = st.progress(0.0, text="starting")

        def progress(done: int, total: int, message: str) -> None:
            bar.progress(min(1.0, done / max(total, 1)), text=message)

        try:
            result = atk(picked.x, target.tensor, progress=progress)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            status.update(label=f"{title}: out of GPU memory", state="error")
            st.session_state.pop("_running", None)
            st.error(f"{title} ran out of GPU memory: pick device 'cpu' in the sidebar, or a smaller model.")
            return None
        except MlalpError as exc:
            status.update(label=f"{title} failed", state="error")
            st.session_state.pop("_running", None)
            st.error(f"{title} failed: {exc}")
            return None
        ok = bool(result.success[0])
        status.update(label=f"{title}: {'success' if ok else 'target not reached'} in "
                            f"{time.perf_counter() - t0:.1f} s", state="complete", expanded=False)
    store_result(key, result)
    st.session_state.pop("_running", None)
    return result


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
    def from_result(cls, res: AttackResult, label_names, origin: str = "") -> "ResultView":
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
                          mime={"svg": "image/svg+xml", "png": "image/png", "pdf": "application/pdf"}[fmt],
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
