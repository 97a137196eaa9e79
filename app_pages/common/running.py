"""Running an attack with live progress, and the results kept per session (a view change never
re-runs an attack)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import streamlit as st
import torch

from mlalp_core.attacks import (
    AttackResult,
    make_attack,
)
from mlalp_core.errors import MlalpError
from mlalp_core.viz.figures import (
    display_name,
)

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


