"""Explore: one image, one attack, everything about its result.

Pick an image (gallery or upload), see its labels and the model's predictions, choose the target
y* by label names and an attack with its settings, run it with live progress (Stop cancels),
and study the result: images, per-channel distortion surfaces, label confidences, metrics and
the per-iteration trace. Results are cached per (model, image, target, attack, settings), so
changing a view never re-runs the attack. A result opened from the Benchmark page is shown from
the results store, without re-running.
"""

from __future__ import annotations

import streamlit as st
import torch

from mlalp_core.attacks import ATTACKS, DISPLAY_NAMES
from mlalp_core.errors import MlalpError
from mlalp_core.experiments.store import ResultsStore
from mlalp_core.viz.figures import adversarial_image
from pages.common import panels, pickers, running, settings_form, sidebar

st.title("Explore one attack")
g = sidebar.current()


def show_stored(ref: dict) -> None:
    """A stored example from the Benchmark page: its perturbation and probabilities as stored."""
    try:
        ex = ResultsStore(ref["store"]).example(ref["run_key"], ref["example_id"])
        ds = sidebar.cached_dataset(ex["dataset"], ex["split"])
        r = ex["perturbation"]
        x = ds.image(int(ex["idx"]), (int(r.shape[-2]), int(r.shape[-1])))
    except MlalpError as exc:
        st.error(f"Cannot open the stored example: {exc}")
        return
    view = panels.ResultView(
        attack=ex["attack"], label_names=tuple(ex["label_names"]), threshold=float(ex["threshold"]), x=x,
        x_adv=torch.from_numpy(adversarial_image(x, r)).float(), r=r, probs_clean=ex["probs_clean"],
        probs_adv=ex["probs_adv"], target=ex["target"],
        metrics={k: ex.get(k) for k in ("success", "l2", "linf", "rmsd", "rmsd_paper", "iterations", "time_s",
                                        "labels_wrong", "model_calls")},
        trace=ex["trace"],
        note=next((e["outcome"] for e in reversed(ex["trace"]) if e.get("outcome")), ""),
        origin=(f"Stored result: model {ex['model']}, {ex['dataset']}/{ex['split']} example {ref['example_id']}, "
                f"run {ref['run_key']} (perturbation stored as {ex.get('pert_dtype', 'float16')}; not re-run)."),
    )
    panels.show_result(view, "stored", f"{ex['model']}_{ref['example_id']}_{ex['attack']}")


stored = st.session_state.get("stored_example")
if stored is not None:
    c1, c2 = st.columns([4, 1])
    c1.info(f"Showing a stored result from the Benchmark page: {DISPLAY_NAMES.get(stored['attack'], stored['attack'])} "
            f"on {stored['example_id']}.")
    if c2.button("Back to live exploration", key="explore_leave_stored"):
        st.session_state.pop("stored_example", None)
        st.rerun()
    show_stored(stored)
    st.stop()

model = sidebar.get_model(g)
if model is None:
    st.stop()

picked, probs = pickers.pick_image_and_show_labels(g, model, "explore")

st.header("Target and attack")
left, right = st.columns([3, 2])
with left:
    target = pickers.pick_target(model, picked, probs, g.threshold, "explore")
    attack = st.selectbox("Attack", list(ATTACKS), format_func=DISPLAY_NAMES.get, key="explore_attack")
    with st.expander(f"{DISPLAY_NAMES[attack]} settings", expanded=attack == "mla-lp"):
        settings = settings_form.attack_settings(attack, "explore")
with right:
    if target is not None:
        pickers.target_preview(model.label_names, probs, target, g.threshold)
notes = pickers.target_notes(target, attack) if target is not None else []
for note in notes:
    st.warning(note)

can_run = target is not None and not notes
key = running.result_key(g, picked, target, attack, settings) if target is not None else None
c1, c2 = st.columns([1, 5])
run = c1.button("Run", type="primary", disabled=not can_run, key="explore_run")
settings_form.settings_note(c2, {attack: settings})
result = running.cached_result(key) if key is not None else None
if run and (result is None or result.stopped):  # a stopped result runs again to the end
    stop = c2.empty()
    stop.button("Stop", key="explore_stop", help="Stops the attack at its next iteration")
    result = running.run_attack(g, model, attack, settings, picked, target, key)
    stop.empty()
elif key is not None and running.interrupted([key]):
    st.warning("The run was stopped before it finished (Stop, or another control was changed). Press Run to "
               "start it again.")
elif result is None and can_run:
    c2.caption("Press Run to attack this image (results are kept: changing a view does not re-run).")

if result is not None:
    st.header("Result")
    view = panels.ResultView.from_result(result, model.label_names,
                                      origin=f"{g.model} on {picked.title}, threshold {g.threshold:g}")
    panels.show_result(view, "explore", f"{g.model}_{picked.title}_{attack}")
