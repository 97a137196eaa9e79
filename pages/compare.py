"""Compare: one image, all five attacks on the same target, as the paper's Fig. 1.

Each attack runs once per (model, image, target, settings) and is cached with the Explore
page's results, so a result seen there is not computed again. The grid shows a row per attack
(its R, G, B distortion surfaces and the adversarial image) and downloads as one PDF or SVG at
publication size; the table gives each attack's metrics.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from mlalp_core.attacks import ATTACKS, DISPLAY_NAMES, PAPER_ATTACKS
from mlalp_core.device import resolve_device
from mlalp_core.experiments.metrics import attack_metrics
from mlalp_core.viz.figures import POOLINGS, GridRow, figure1_grid, predicted_names
from mlalp_core.viz.paper import fig1_grid as paper_fig1
from pages.common import panels, pickers, running, settings_form, sidebar

PAGE = "compare"
ORDER = list(PAPER_ATTACKS)  # the rows of the paper's Fig. 1; the field's attacks can be added
PRESET_LABELS = {"paper": "the paper's settings",
                 "quick": "quick look (CW family: 100 iterations x 3 binary steps instead of 1000 x 10)"}

st.title("Compare the five attacks")
g = sidebar.current()
model = sidebar.get_model(g)
if model is None:
    st.stop()

picked, probs = pickers.pick_image_and_show_labels(g, model, PAGE)

st.header("Target and settings")
target = pickers.pick_target(model, picked, probs, g.threshold, PAGE)
attacks = st.multiselect("Attacks (rows of Fig. 1)", list(ATTACKS), default=ORDER, key=f"{PAGE}_attacks",
                         format_func=DISPLAY_NAMES.get,
                         help="The paper's five by default; FGSM, BIM, PGD, MI-FGSM and PGD-l2 are the field's attacks "
                              "(their minimum-budget search finds the smallest budget that reaches y*).")
if not attacks:
    st.info("Choose at least one attack.")
    st.stop()
on_cpu = resolve_device(g.device).type == "cpu"
if f"{PAGE}_preset" not in st.session_state:  # a CPU starts on the quick look; the paper's is one click away
    st.session_state[f"{PAGE}_preset"] = "quick" if on_cpu else "paper"
    settings_form.apply_preset(PAGE, attacks, st.session_state[f"{PAGE}_preset"])
preset = st.radio("Settings", list(PRESET_LABELS), format_func=PRESET_LABELS.get, key=f"{PAGE}_preset", horizontal=True,
                  on_change=lambda: settings_form.apply_preset(PAGE, attacks, st.session_state[f"{PAGE}_preset"]))
settings: dict[str, dict] = {}
cols = st.columns(len(attacks))
for col, a in zip(cols, attacks):
    with col, st.expander(DISPLAY_NAMES[a]):
        settings[a] = settings_form.attack_settings(a, PAGE)
blocked = {a: pickers.target_notes(target, a) for a in attacks} if target is not None else {}
for note in (n for ns in blocked.values() for n in ns):
    st.warning(note)

keys = {a: running.result_key(g, picked, target, a, settings[a]) for a in attacks} if target is not None else {}
results = {a: running.cached_result(k) for a, k in keys.items()}
missing = [a for a in attacks if results.get(a) is None or results[a].stopped]  # stopped ones run again
c1, c2 = st.columns([1, 5])
label = f"Run {len(missing)} attack(s)" if missing and len(missing) < len(attacks) else (
    "Run all five" if len(attacks) == 5 else f"Run all {len(attacks)}")
run = c1.button(label, type="primary", disabled=target is None, key=f"{PAGE}_run")
settings_form.settings_note(c2, settings)
if missing and target is not None:
    running.estimate_note(c2, g, model, {a: settings[a] for a in missing}, surfaces=3 * len(attacks))
if run and missing:
    stop = c2.empty()
    stop.button("Stop", key=f"{PAGE}_stop",
                help="Stops the running attack and keeps its best iterate so far; finished ones are kept")
    overall = st.progress(0.0, text="")
    for i, a in enumerate(missing):
        overall.progress(i / len(missing), text=f"attack {i + 1} of {len(missing)}: {DISPLAY_NAMES[a]}")
        if blocked.get(a):
            continue
        results[a] = running.run_attack(g, model, a, settings[a], picked, target, keys[a])
    overall.progress(1.0, text="done")
    stop.empty()
elif keys and running.interrupted(list(keys.values())):
    st.warning("The runs were stopped before all finished; the finished attacks are kept. Press Run to go on.")
elif missing and target is not None:
    c2.caption(f"Still to run: {', '.join(DISPLAY_NAMES[a] for a in missing)}.")

done = [a for a in attacks if results.get(a) is not None]
if done:
    st.header("Fig. 1")
    c1, c2, c3 = st.columns(3)
    scale = c1.radio("z-range", ["shared", "per attack"], key=f"{PAGE}_zscale", horizontal=True,
                     help="Shared: one range and colour bar for all attacks, so they compare at a glance.")
    pooling = c2.radio("pooling", list(POOLINGS), format_func=POOLINGS.get, key=f"{PAGE}_pool", horizontal=True)
    side = c3.selectbox("max side shown per surface", [64, 32, 128], key=f"{PAGE}_side",
                        help="15 WebGL surfaces share the page: 64 keeps it fluid.")
    names = model.label_names

    def rows_for() -> list[GridRow]:
        out = []
        for a in done:
            res = results[a]
            after = predicted_names(names, res.probs_adv[0], res.threshold)
            mark = "success" if bool(res.success[0]) else "failed"
            out.append(GridRow(DISPLAY_NAMES[a], res.perturbation[0], res.x_adv[0],
                               caption=f"{mark}: {', '.join(after) or 'no label'}"))
        return out

    original_caption = ", ".join(predicted_names(names, probs, g.threshold)) or "no label"
    shared = scale == "shared"
    grid = figure1_grid(rows_for(), original=picked.x[0], original_caption=original_caption, pooling=pooling,
                        max_side=int(side), shared_z=shared)
    stem = f"{g.model}_{picked.title}_fig1"
    panels.chart(grid, stem, f"{PAGE}_grid")
    panels.paper_export(lambda o: paper_fig1(rows_for(), original=picked.x[0], original_caption=original_caption,
                                             shared_z=shared, pooling=pooling, **o), stem, f"{PAGE}_paper")

    st.header("Metrics")
    table = []
    for a in done:
        m = attack_metrics(results[a])[0]
        table.append({"attack": DISPLAY_NAMES[a], "success": m["success"], "l_2": m["l2"], "l_inf": m["linf"],
                      "RMSD (0..255)": m["rmsd"], "RMSD (paper)": m["rmsd_paper"], "iterations": m["iterations"],
                      "model calls": m["model_calls"], "time (s)": m["time_s"],
                      "labels wrong": m["labels_wrong"], "wrongly flipped": m["collateral"]})
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(format="%.5f")
                                for k in ("l_2", "l_inf", "RMSD (0..255)", "RMSD (paper)")})
    st.caption("l_2 and l_inf in [0,1] pixel units; RMSD (0..255) = 255 x RMS(r); RMSD (paper) = 127.5 x RMS(r), "
               "the scale of the paper's Table III. Open an attack in Explore for its surfaces, bars and trace.")
