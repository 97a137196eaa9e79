"""Benchmark: the batch runner's results store as the paper's tables.

Table II (test examples and examples to be attacked) and Table III (success rate and mean
distortions of the successful examples) with one row per run (an attack with other settings, mode,
seed or numerics is a row of its own, labelled by what differs), with filters and the
paper's numbers beside ours; success rate against an l_inf and an l_2 budget; a new batch run
on N examples with live progress; a drill-down from a Table III row to its examples, each of
which opens in Explore from its stored perturbation (no re-run); CSV, Markdown and LaTeX.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from mlalp_core.attacks import ATTACKS, DISPLAY_NAMES, PAPER_ATTACKS, PRESETS
from mlalp_core.data.registry import list_datasets
from mlalp_core.errors import MlalpError
from mlalp_core.experiments.pairwise import PAIRWISE_COLUMNS, efficiency, pairwise
from mlalp_core.experiments.reporting import (
    PAPER_TABLE2,
    budget_curves,
    run_notes,
    table2,
    table3,
    to_csv,
    to_latex,
    to_markdown,
    with_paper,
)
from mlalp_core.experiments.runner import BenchConfig, run_benchmark
from mlalp_core.experiments.store import ResultsStore
from mlalp_core.models.registry import list_models
from mlalp_core.settings import load_settings
from mlalp_core.viz.efficiency import efficiency_figure, efficiency_paper
from mlalp_core.viz.figures import budget_curves_figure
from mlalp_core.viz.paper import budget_curves as paper_budget_curves
from pages.common import panels, sidebar

PAGE = "bench"
st.title("Benchmark")
g = sidebar.current()

try:
    default_store = str(load_settings().results)
except MlalpError as exc:
    st.error(f"{exc}. Fix the setting and reload the page.")
    st.stop()
if f"{PAGE}_store" not in st.session_state:
    st.session_state[f"{PAGE}_store"] = default_store
path = st.text_input("Results store (SQLite)", key=f"{PAGE}_store",
                     help="Written by `mlalp bench` and by the batch runs launched below (MLALP_RESULTS sets the "
                          "default).")

# ---------------------------------------------------------------------------------------------
# Launch a batch run
# ---------------------------------------------------------------------------------------------
with st.expander("Launch a batch run", expanded=not Path(path).is_file()):
    models_av = [m.name for m in list_models() if m.available]
    data_av = [d for d in list_datasets() if d.available]
    c1, c2, c3 = st.columns(3)
    models = c1.multiselect("Models", models_av, default=[g.model] if g.model in models_av else models_av[:1],
                            key=f"{PAGE}_models")
    ds_names = [d.name for d in data_av]
    dataset = c2.selectbox("Data set", ds_names, key=f"{PAGE}_dataset")
    info = next((d for d in data_av if d.name == dataset), None)
    split = c3.selectbox("Split", info.splits if info else [], key=f"{PAGE}_split")
    attacks = st.multiselect("Attacks", list(ATTACKS), default=list(PAPER_ATTACKS), format_func=DISPLAY_NAMES.get,
                             key=f"{PAGE}_attacks")
    c1, c2, c3, c4 = st.columns(4)
    n = c1.number_input("Examples per model (N)", min_value=1, value=8, key=f"{PAGE}_n",
                        help="The first N examples the model classifies right with at least two labels (Table II).")
    seed = c2.number_input("Seed (hide-one)", min_value=0, value=0, key=f"{PAGE}_seed")
    batch = c3.number_input("Batch size", min_value=1, value=8, key=f"{PAGE}_batch")
    preset = c4.radio("Settings", ["paper", "quick"], key=f"{PAGE}_preset",
                      format_func={"paper": "the paper's", "quick": "quick (CW family: 100 x 3)"}.get)
    attack_settings = {a: dict(PRESETS[preset].get(a, {})) for a in attacks}
    launch = st.button("Launch", type="primary", key=f"{PAGE}_launch", disabled=not (models and attacks and info))
    if launch:
        stop_slot = st.empty()  # cleared when the run ends: no stale Stop button
        stop_slot.button("Stop", key=f"{PAGE}_stop", help="Stops after the current batch; finished examples are kept")
        cfg = BenchConfig(models=tuple(models), dataset=dataset, split=split, attacks=tuple(attacks), n=int(n),
                          seed=int(seed), batch_size=int(batch), device=g.device, attack_settings=attack_settings,
                          store=path)
        with st.status("Batch run ...", expanded=True) as status:
            bar = st.progress(0.0, text="starting")

            def progress(done: int, total: int, message: str) -> None:
                bar.progress(min(1.0, done / max(total, 1)), text=message)

            try:
                table = run_benchmark(cfg, progress)
                status.update(label=f"Batch run finished: {len(table)} (model, attack) groups", state="complete",
                              expanded=False)
            except MlalpError as exc:
                status.update(label="Batch run failed", state="error")
                st.error(f"The batch run failed: {exc}")
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                status.update(label="Batch run: out of GPU memory", state="error")
                st.error("The GPU ran out of memory: lower the batch size or pick device 'cpu' in the sidebar.")
        stop_slot.empty()

if not Path(path).is_file():
    st.info(f"No results store at {path} yet: launch a batch run above, or run `mlalp bench` and point this page "
            "at its store.")
    st.stop()
try:
    store = ResultsStore(path)
    rows = store.rows()
    t2 = table2(store)
except MlalpError as exc:
    st.error(f"Cannot read the results store: {exc}")
    st.stop()
if not rows:
    st.info("The results store holds no finished example yet.")
    st.stop()

# ---------------------------------------------------------------------------------------------
# Filters and tables
# ---------------------------------------------------------------------------------------------
st.header("Results")
c1, c2, c3 = st.columns(3)
opts = {k: sorted({r[k] for r in rows}) for k in ("model", "dataset", "attack")}
f_model = c1.multiselect("Model", opts["model"], default=opts["model"], key=f"{PAGE}_f_model")
f_data = c2.multiselect("Data set", opts["dataset"], default=opts["dataset"], key=f"{PAGE}_f_dataset")
f_attack = c3.multiselect("Attack", opts["attack"], default=opts["attack"], key=f"{PAGE}_f_attack",
                          format_func=lambda a: DISPLAY_NAMES.get(a, a))
chosen = [r for r in rows if r["model"] in f_model and r["dataset"] in f_data and r["attack"] in f_attack]
run_labels = {r["run_key"]: f"{r['model']} / {r['dataset']} / {r['label']}" for r in table3(chosen)}
f_run = st.multiselect("Runs", list(run_labels), default=list(run_labels), key=f"{PAGE}_f_run",
                       format_func=lambda k: f"{run_labels.get(k, k)} (run {k[:8]})",
                       help="Each run is one attack with one set of settings, seed and numerics: one row of "
                            "Table III.")
chosen = [r for r in chosen if r["run_key"] in f_run]
if not chosen:
    st.warning("No stored example matches the filters: widen them.")
    st.stop()

st.subheader("Table II: examples")
if t2:
    t2_show = [dict(r, paper=("{} / {}".format(*PAPER_TABLE2[(r["model"], r["dataset"])])
                              if (r["model"], r["dataset"]) in PAPER_TABLE2 else "")) for r in t2
               if r["model"] in f_model and r["dataset"] in f_data]
    st.dataframe(pd.DataFrame(t2_show), hide_index=True, width="stretch")
    st.caption("Examples to be attacked: classified right on every label, with at least two positive labels.")

st.subheader("Table III: attacks")
t3 = table3(chosen)
hidden = ("attack", "label", "run_key", "settings", "numerics", "seed")
show = pd.DataFrame([{**{k: v for k, v in r.items() if k not in hidden}, "attack": r["label"],
                      "run": r["run_key"][:8]} for r in with_paper(t3)])
lead = [c for c in ("model", "dataset", "objective", "norm", "attack") if c in show.columns]
show = show[lead + [c for c in show.columns if c not in lead]]
paper_cols = [c for c in show.columns if c.startswith("paper_")]
no_paper = bool(paper_cols) and bool(show[paper_cols].isna().all().all())
if no_paper:  # the paper has numbers for ML-GCN / ML-LIW on VOC only
    show = show.drop(columns=paper_cols)
show = show.rename(columns={"time_s": "time/example (s)"})
st.dataframe(show, hide_index=True, width="stretch",
             column_config={k: st.column_config.NumberColumn(format="%.4f")
                            for k in ("success_rate", "rmsd", "rmsd_paper", "l2", "linf", "paper_success_rate",
                                      "paper_rmsd", "paper_l2", "paper_linf")})
st.caption("One row per run: " + " · ".join(run_notes(t3)))
st.caption("Rows in the paper's order. Success rate over all attacked examples; RMSD, l_2 and l_inf averaged over "
           "the successful ones (l_2, l_inf in [0,1] units; RMSD on 0..255, and 'rmsd_paper' on the paper's printed "
           "scale); None where a run reached no example (nothing to average). Time per example: MLA-LP times each example; the others divide their batch's wall time by its "
           "size. " + ("The paper's columns are hidden: it has numbers for ML-GCN and ML-LIW on VOC only."
                       if no_paper else "paper_*: the paper's Table III for the same model, data set and attack."))
c1, c2, c3 = st.columns(3)
c1.download_button("Table III as CSV", to_csv(t3), file_name="table3.csv", mime="text/csv", key=f"{PAGE}_csv",
                   on_click="ignore")
c2.download_button("Table III as LaTeX", to_latex(t3, caption="Attack results", label="tab:attacks"),
                   file_name="table3.tex", mime="text/x-tex", key=f"{PAGE}_tex", on_click="ignore")
c3.download_button("Table III as Markdown", to_markdown(t3), file_name="table3.md", mime="text/markdown",
                   key=f"{PAGE}_md", on_click="ignore")

st.subheader("Success rate against the distortion budget")
try:
    panels_data = {"linf": budget_curves(chosen, "linf"), "l2": budget_curves(chosen, "l2")}
    panels.chart(budget_curves_figure(panels_data), "budget_curves", f"{PAGE}_curves")
    panels.paper_export(lambda o: paper_budget_curves(panels_data, **o), "budget_curves", f"{PAGE}_paper",
                        surfaces=False)
except MlalpError as exc:
    st.warning(f"No curve to draw: {exc}")

st.subheader("Efficiency: distortion against model calls")
eps_budget = st.number_input("l_inf budget for the success panel ([0,1] units; 0 = none)", min_value=0.0,
                             max_value=1.0, value=0.0, step=0.005, format="%.4f", key=f"{PAGE}_eff_eps")
budget = float(eps_budget) or None
try:
    points = efficiency(chosen, budget)
    panels.chart(efficiency_figure(points, budget=budget), "efficiency", f"{PAGE}_eff")
    panels.paper_export(lambda o: efficiency_paper(points, budget=budget, **o), "efficiency", f"{PAGE}_eff_paper",
                        surfaces=False)
    st.caption("One point per run: mean model calls per example against the mean l_inf of its successes (and, with "
               "a budget, its success rate within it). Lower-left is cheaper and smaller.")
except MlalpError as exc:
    st.warning(f"No efficiency figure: {exc}")

st.subheader("Pairwise: two runs on the same examples")
run_keys = [r["run_key"] for r in t3]
if len(run_keys) >= 2:
    names = {r["run_key"]: f"{r['model']} / {r['dataset']} / {r['label']}" for r in t3}
    c1, c2 = st.columns(2)
    run_a = c1.selectbox("A", run_keys, index=0, key=f"{PAGE}_pw_a", format_func=names.get)
    run_b = c2.selectbox("B", run_keys, index=1, key=f"{PAGE}_pw_b", format_func=names.get)
    try:
        pw = pairwise(chosen, run_a, run_b)
        st.dataframe(pd.DataFrame([{PAIRWISE_COLUMNS[k][0]: r[k] for k in PAIRWISE_COLUMNS} for r in pw]),
                     hide_index=True, width="stretch")
        st.caption("On the examples both runs attacked: success of each and of either; on those both reached, the "
                   "per-example ratios A/B of l_inf and l_2 (median and quartiles; below 1: A needed less) and who "
                   "needed the smaller l_inf; mean model calls and time per example.")
        st.download_button("Pairwise as CSV", to_csv(pw, PAIRWISE_COLUMNS), file_name="pairwise.csv", mime="text/csv",
                           key=f"{PAGE}_pw_csv", on_click="ignore")
    except MlalpError as exc:
        st.warning(f"No pairwise comparison: {exc}")
else:
    st.info("Two runs are needed for a pairwise comparison.")

# ---------------------------------------------------------------------------------------------
# Drill-down
# ---------------------------------------------------------------------------------------------
st.header("Examples")
by_run = {r["run_key"]: r for r in t3}
group = st.selectbox("Table III row", list(by_run), key=f"{PAGE}_group",
                     format_func=lambda k: f"{by_run[k]['model']} / {by_run[k]['dataset']} / {by_run[k]['label']}")
members = [r for r in chosen if r["run_key"] == group]
run = by_run[group]
st.caption(f"Run {group}: {run['label']}, seed {run['seed']}, {run['numerics']}; "
           + (run["settings"] or "the paper's settings") + ".")
st.dataframe(pd.DataFrame([{k: r[k] for k in ("example_id", "success", "l2", "linf", "rmsd", "rmsd_paper",
                                              "iterations", "time_s", "labels_wrong", "run_key")}
                           for r in members]), hide_index=True, width="stretch")
pick = st.selectbox("Example", list(range(len(members))), key=f"{PAGE}_example",
                    format_func=lambda i: f"{members[i]['example_id']} ({'success' if members[i]['success'] else 'failed'}"
                                          f", run {members[i]['run_key'][:8]})")
if st.button("Open in Explore", key=f"{PAGE}_open", type="primary"):
    r = members[int(pick)]
    st.session_state["stored_example"] = {"store": path, "run_key": r["run_key"], "example_id": r["example_id"],
                                          "attack": r["attack"]}
    st.switch_page("pages/explore.py")
