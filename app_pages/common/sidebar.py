"""The sidebar's global choices (data source, model, device, threshold), kept across pages, and
the cached loaders of models, data sets and thumbnails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from mlalp_core.attacks import file_settings
from mlalp_core.data.images import tensor_to_pil
from mlalp_core.data.registry import list_datasets, load_dataset
from mlalp_core.device import available_devices, check_environment, describe_device
from mlalp_core.errors import MlalpError
from mlalp_core.models.registry import list_models, load_model

UPLOAD = "upload"

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
        file_settings()  # mlalp.toml's [attacks.*] tables: checked here as the rest of the file
        for warning in check_environment():  # MLALP_LP_THREADS, MLALP_LP_BATCH, MLALP_TF32: parsed now
            sb.warning(warning)
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
def thumbnail(dataset: str, split: str | None, index: int):
    ds = cached_dataset(dataset, split)
    return tensor_to_pil(ds.image(index, (96, 96)))


