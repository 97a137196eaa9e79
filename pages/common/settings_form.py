"""An attack's settings as widgets drawn from its schema, kept outside the widgets' own state,
and the note beside Run that says which settings differ from the paper's."""

from __future__ import annotations

from typing import Any

import streamlit as st

from mlalp_core.attacks import PRESETS, attack_class, file_settings, parse_settings
from mlalp_core.errors import MlalpError
from mlalp_core.lp import backend_status
from mlalp_core.viz.figures import display_name

# ---------------------------------------------------------------------------------------------
# Attack settings
# ---------------------------------------------------------------------------------------------

def _initial_settings(attack: str) -> dict[str, Any]:
    """The paper's settings, with mlalp.toml's ``[attacks.<name>]`` table on top."""
    try:
        overrides = file_settings().get(attack, {})
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


def _setting_widget(setting, key: str, on_change: dict[str, Any], used: bool = True) -> None:
    label, help_ = setting.title, f"{setting.help}. Accepts {setting.allowed()}; the paper: {setting.default}."
    if setting.used_when:
        help_ += f" ({setting.used_note()}.)"
    on_change = {**on_change, "disabled": not used}  # greyed out where the other settings make no use of it
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
        _setting_widget(setting, key, {"on_change": _commit_setting, "args": (page, attack, setting.name)},
                        setting.used_with(kept))
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


