"""Property tests (hypothesis): whatever a user throws at a setting or a target builder, the
answer is a valid typed value or an InvalidInputError, never anything else, and a value that
is accepted means exactly what it says."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlalp_core.attacks import ATTACKS
from mlalp_core.attacks.targets import add, custom, hide, hide_one
from mlalp_core.cli.bench import parse_sets
from mlalp_core.errors import InvalidInputError

SETTINGS = [(a, s) for a, cls in ATTACKS.items() for s in cls.schema]
IDS = [f"{a}.{s.name}" for a, s in SETTINGS]

#: Text a user might type: words, numbers in every spelling, and noise.
TEXTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["true", "False", "YES", "no", "1", "0", "01", "-0", "+1", "1.0", "1e3", "1e-6", "nan", "NaN",
                     "inf", "-inf", "1_000", "0x10", " 7 ", "", "none", "auto", "None", "batched", "LOOP", "mosek"]),
    st.integers(-10**7, 10**7).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
VALUES = st.one_of(st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                   st.none(), TEXTS, st.lists(st.integers(), max_size=2))


def _valid(setting, value) -> None:
    """An accepted value has the declared type and lies in the declared range or choices."""
    if value is None:
        assert setting.none_means
        return
    assert type(value) is setting.kind
    if setting.choices:
        assert value in setting.choices
    if setting.kind in (int, float):
        assert math.isfinite(value)
        if setting.low is not None:
            assert value > setting.low if setting.low_open else value >= setting.low
        if setting.high is not None:
            assert value < setting.high if setting.high_open else value <= setting.high


@pytest.mark.parametrize("attack, setting", SETTINGS, ids=IDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALUES)
def test_any_value_parses_to_a_valid_one_or_is_refused(attack, setting, value):
    try:
        parsed = setting.parse(value, attack)
    except InvalidInputError as exc:
        assert "\n" not in str(exc) and f"{attack}.{setting.name}" in str(exc)
        return
    _valid(setting, parsed)


@pytest.mark.parametrize("attack, setting", SETTINGS, ids=IDS)
@settings(max_examples=100, deadline=None)
@given(text=TEXTS)
def test_any_set_text_parses_exactly_or_is_refused(attack, setting, text):
    try:
        out = parse_sets([f"{attack}.{setting.name}={text}"])
    except InvalidInputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("--set ")
        return
    value = out[attack][setting.name]
    _valid(setting, value)
    word = text.strip().lower()
    if setting.kind is bool:  # nothing but these six words, in any case
        assert word in ("true", "1", "yes", "false", "0", "no") and value is (word in ("true", "1", "yes"))
    elif value is None:
        assert word in ("none", "auto")
    elif setting.kind is int:
        assert value == int(text.strip())
    elif setting.kind is float:
        assert value == float(text.strip())


@pytest.mark.parametrize("attack, setting", SETTINGS, ids=IDS)
def test_every_accepted_value_survives_a_round_trip_through_text(attack, setting):
    candidates = {bool: [True, False], int: [1, 7, 10, 999], float: [1e-6, 0.01, 0.25, 0.49, 1e5]}
    values = list(setting.choices) if setting.choices else candidates[setting.kind]
    for v in values:
        try:
            parsed = setting.parse(v, attack)
        except InvalidInputError:
            continue
        text = str(parsed).lower() if isinstance(parsed, bool) else repr(parsed) if isinstance(parsed, float) \
            else str(parsed)
        assert setting.parse(text, attack) == parsed


LABELS = st.integers(1, 12).flatmap(
    lambda l: st.lists(st.lists(st.booleans(), min_size=l, max_size=l), min_size=1, max_size=6))


@settings(max_examples=200, deadline=None)
@given(rows=LABELS, seed=st.integers(0, 10**9))
def test_hide_one_flips_exactly_one_positive_label_or_refuses(rows, seed):
    y = torch.tensor(rows, dtype=torch.bool)
    try:
        t = hide_one(y, seed=seed)
    except InvalidInputError as exc:
        assert "no positive label" in str(exc) and bool((y.sum(1) == 0).any())
        return
    assert ((y & ~t).sum(1) == 1).all() and not (~y & t).any()
    assert torch.equal(t, hide_one(y, seed=seed))  # seeded: the same every time


@settings(max_examples=200, deadline=None)
@given(rows=LABELS, which=st.lists(st.one_of(st.integers(-3, 14), st.text(max_size=3)), max_size=4),
       adding=st.booleans())
def test_hide_and_add_change_exactly_the_chosen_labels_or_refuse(rows, which, adding):
    y = torch.tensor(rows, dtype=torch.bool)
    names = [f"l{j}" for j in range(y.shape[1])]
    try:
        t = (add if adding else hide)(y, which, names)
    except InvalidInputError as exc:
        assert "\n" not in str(exc)
        return
    idx = sorted({names.index(w) if isinstance(w, str) else w for w in which})
    changed = (t != y).any(0).nonzero().flatten().tolist()
    assert changed == idx and bool((t[:, idx] == adding).all())


@settings(max_examples=200, deadline=None)
@given(rows=LABELS, data=st.data())
def test_custom_accepts_any_different_target_of_the_right_shape(rows, data):
    y = torch.tensor(rows, dtype=torch.bool)
    l = y.shape[1]
    width = data.draw(st.sampled_from([l, l, l + 1, max(1, l - 1)]))
    target = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=width, max_size=width),
                                             min_size=1, max_size=y.shape[0])), dtype=torch.bool)
    try:
        t = custom(y, target)
    except InvalidInputError:
        return
    assert t.shape == y.shape and bool(((t != y).any(1)).all())
