"""Models: what is available (the demo models, the paper's when configured, users' own), with
the reason when a model cannot be used; each model's input size and labels; and its Table I
quality metrics on a chosen data split, computed through the library and cached per session.
"""

from __future__ import annotations

import re
import time

import pandas as pd
import streamlit as st
import torch

from mlalp_core.cli.models import TABLE_ONE_ROWS, predict_dataset, table_one
from mlalp_core.data.registry import list_datasets
from mlalp_core.errors import MlalpError
from mlalp_core.models.registry import list_models
from pages.common import sidebar

st.title("Models")
g = sidebar.current()

try:
    infos = list_models()
except MlalpError as exc:
    st.error(f"{exc}. Fix the setting and reload the page.")
    st.stop()


def _cell(text: str) -> str:
    """Text shown as it is in st.table, which reads cells as Markdown ("-" became a bullet)."""
    return re.sub(r"([\\`*_{}\[\]<>|~#+!-])", r"\\\1", text)


UNKNOWN = "not known until loaded"
# A static table: every cell in full (the "what to do" lines are long) and one type per column
# (strings): a dataframe cut the long lines off, and a "-" among numbers failed Arrow's conversion.
st.table(pd.DataFrame([{k: _cell(v) for k, v in {
    "model": i.name, "kind": i.kind, "available": "yes" if i.available else "no",
    "input size": f"{i.input_size[0]}x{i.input_size[1]}" if i.input_size else UNKNOWN,
    "labels": str(i.num_labels) if i.num_labels is not None else UNKNOWN,
    "description": i.description, "what to do": sidebar.why_unavailable(i.name, i.reason),
}.items()} for i in infos]), hide_index=True)

for i in infos:
    if not i.available:
        st.warning(f"**{i.name}** is not available: {sidebar.why_unavailable(i.name, i.reason)}.")
st.caption("Paper models are configured with environment variables or an mlalp.toml (see the README): "
           "MLALP_MLGCN_CHECKPOINT and MLALP_MLGCN_WORD_VECTORS for ML-GCN, MLALP_MLLIW_CHECKPOINT for ML-LIW.")

available = [i.name for i in infos if i.available]
if not available:
    st.stop()
st.header("Details and Table I")
name = st.selectbox("Model", available, index=available.index(g.model) if g.model in available else 0,
                    key="models_model")
model = sidebar.get_model(sidebar.Globals(g.dataset, g.split, name, g.device, g.threshold))
if model is None:
    st.stop()
info = model.describe()
c1, c2, c3, c4 = st.columns(4)
c1.metric("input size", f"{model.input_size[0]}x{model.input_size[1]}")
c2.metric("labels", model.num_labels)
c3.metric("threshold", f"{model.threshold:g}")
c4.metric("parameters", f"{info['parameters']:,}")
st.markdown("**Labels:** " + ", ".join(model.label_names))

datasets = [d for d in list_datasets() if d.available]
if not datasets:
    st.info("No data set is available for Table I: configure VOC (MLALP_VOC_ROOT) or restore the demo gallery.")
    st.stop()
c1, c2, c3 = st.columns(3)
ds_names = [d.name for d in datasets]
ds_name = c1.selectbox("Data set", ds_names, key="models_dataset")
ds_info = next(d for d in datasets if d.name == ds_name)
split = c2.selectbox("Split", ds_info.splits, index=ds_info.splits.index(ds_info.default_split), key="models_split")
limit = c3.number_input("Images (0 = all)", min_value=0, value=0, step=50, key="models_limit",
                        help="The paper models take about a second per image on a CPU: try a few hundred first.")
cache = st.session_state.setdefault("_table1", {})
key = (name, g.device, ds_name, split, int(limit), g.threshold)
if st.button("Compute Table I", type="primary", key="models_compute") and key not in cache:
    try:
        ds = sidebar.cached_dataset(ds_name, split)
        if tuple(ds.label_names) != tuple(model.label_names):
            raise MlalpError(f"{name} predicts other labels than {ds_name} holds: pick a matching data set")
        t0 = time.perf_counter()
        with st.spinner(f"Predicting {int(limit) or len(ds)} images ..."):
            scores, labels, _ = predict_dataset(model, ds, batch_size=16, limit=int(limit) or None)
        cache[key] = (table_one(scores, labels, g.threshold), time.perf_counter() - t0)
    except MlalpError as exc:
        st.error(str(exc))
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        st.error("The GPU ran out of memory: pick device 'cpu' in the sidebar.")
if key in cache:
    report, seconds = cache[key]
    st.dataframe(pd.DataFrame([{"metric": title, "value": report[k]} for k, title in TABLE_ONE_ROWS]),
                 hide_index=True, column_config={"value": st.column_config.NumberColumn(format="%.4f")})
    st.caption(f"{name} on {ds_name}/{split}: {report['examples']} images at threshold {g.threshold:g} "
               f"({seconds:.1f} s). Hamming and ranking loss: lower is better; the others: higher is better.")
