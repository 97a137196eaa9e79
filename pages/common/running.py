"""Running an attack with live progress, and the results kept per session (a view change never
re-runs an attack)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import streamlit as st
import torch

from mlalp_core.attacks import AttackCancelled, AttackResult, make_attack
from mlalp_core.attacks.cost import Costs, estimate_seconds, measure_costs
from mlalp_core.errors import MlalpError
from mlalp_core.viz.figures import display_name

from .pickers import Picked, Target
from .sidebar import Globals

#: Most results kept per session (each holds two images and a perturbation).
MAX_CACHED_RESULTS = 48
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

    A click on Stop (or any other control) reruns the page; the attack notices at its next
    progress report, stops, and its best iterates so far are kept as a result marked "stopped
    early" before the rerun goes ahead.
    """
    title = label or display_name(attack)
    try:
        atk = make_attack(attack, model, threshold=g.threshold, device=g.device, **settings)
    except MlalpError as exc:
        st.error(f"{title}: {exc}")
        return None
    st.session_state["_running"] = key
    t0 = time.perf_counter()
    held: list[BaseException] = []  # Streamlit's rerun/stop signal, raised again once the result is kept
    with st.status(f"Running {title} ...", expanded=True) as status:
        bar = st.progress(0.0, text="starting")

        def progress(done: int, total: int, message: str) -> None:
            try:
                bar.progress(min(1.0, done / max(total, 1)), text=message)
            except BaseException as exc:  # noqa: BLE001 - only Streamlit's control flow is caught
                if isinstance(exc, (Exception, KeyboardInterrupt, SystemExit)):
                    raise
                held.append(exc)
                raise AttackCancelled from None

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
        store_result(key, result)
        st.session_state.pop("_running", None)
        if held:
            raise held[0]
        ok = bool(result.success[0])
        status.update(label=f"{title}: {'success' if ok else 'target not reached'} in "
                            f"{time.perf_counter() - t0:.1f} s", state="complete", expanded=False)
    return result


@st.cache_resource(show_spinner="Timing this model on this device (once) ...", max_entries=8)
def _costs(model_name: str, device: str, _model: Any) -> Costs:
    return measure_costs(_model, device)


#: The page's part of a Compare run, from the click until the page is idle with Fig. 1 drawn,
#: measured with bench/app_latency.py --compare (bench/results/compare_estimate_cpu.txt) in headless
#: Chromium (software WebGL) on the 2-core CPU that also runs the server: each WebGL surface takes
#: the browser 1.1-2 s to draw, whatever its size (15 surfaces: 16-30 s), and the page's reruns
#: around the attacks (progress boxes, the figure, the table) about 3 s. Rounded up: "at most".
DRAW_SECONDS_PER_SURFACE = 2.0
PAGE_SECONDS = 5.0


def estimate_note(where: Any, g: Globals, model: Any, settings: dict[str, dict[str, Any]], *,
                  surfaces: int = 0) -> None:
    """Before a run: how long each attack may take here, from its settings and measured costs, and
    the page's own time to redraw with ``surfaces`` WebGL surfaces (the run is over when the
    page is idle and drawn, not when the attacks return)."""
    try:
        costs = _costs(g.model, g.device, model)
    except MlalpError as exc:
        where.caption(f"No time estimate: {exc}")
        return
    est = {a: estimate_seconds(a, s, costs) for a, s in settings.items()}
    parts = ", ".join(f"{display_name(a)} {_seconds(t)}" for a, t in est.items())
    page = PAGE_SECONDS + DRAW_SECONDS_PER_SURFACE * surfaces
    where.caption(f"Estimated at most, on {costs.device}: {parts}; drawing the page and its {surfaces} surfaces "
                  f"{_seconds(page)}; together {_seconds(sum(est.values()) + page)} (early stops usually make the "
                  "attacks shorter; a browser with a GPU draws faster).")


def _seconds(t: float) -> str:
    return f"{t:.0f} s" if t < 120 else f"{t / 60:.1f} min"
