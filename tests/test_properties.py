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
    accepted = 0
    for v in values:
        try:
            parsed = setting.parse(v, attack)
        except InvalidInputError:
            assert not _in_range(setting, v), (v, "is valid but refused")
            continue
        accepted += 1
        text = str(parsed).lower() if isinstance(parsed, bool) else repr(parsed) if isinstance(parsed, float) \
            else str(parsed)
        assert setting.parse(text, attack) == parsed
    assert accepted >= 1  # a setting that refuses everything fails here


def _in_range(setting, value) -> bool:
    """Whether a value of the setting's own type lies in its declared range or choices."""
    if setting.choices:
        return value in setting.choices
    if setting.kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, setting.kind):
        return False
    if setting.low is not None and (value < setting.low or (setting.low_open and value == setting.low)):
        return False
    return setting.high is None or not (value > setting.high or (setting.high_open and value == setting.high))


def _declared(setting):
    """Every value the declaration allows (in its own type), and None where it means something."""
    if setting.choices:
        values = st.sampled_from(setting.choices)
    elif setting.kind is bool:
        values = st.booleans()
    elif setting.kind is int:
        low = -10**9 if setting.low is None else int(setting.low) + (1 if setting.low_open else 0)
        high = 10**9 if setting.high is None else int(setting.high) - (1 if setting.high_open else 0)
        values = st.integers(low, high)
    else:
        values = st.floats(min_value=setting.low, max_value=setting.high, exclude_min=setting.low_open,
                           exclude_max=setting.high_open, allow_nan=False, allow_infinity=False)
    return st.one_of(values, st.none()) if setting.none_means else values


def _as_text(value) -> str:
    if value is None:
        return "auto"
    return str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, float) else str(value)


@pytest.mark.parametrize("attack, setting", SETTINGS, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_declared_value_is_accepted_as_it_is(attack, setting, data):
    value = data.draw(_declared(setting))
    parsed = setting.parse(value, attack)
    assert parsed == value and type(parsed) is type(value)
    assert setting.parse(_as_text(value), attack) == value  # as text too
    out = parse_sets([f"{attack}.{setting.name}={_as_text(value)}"])  # and through --set
    assert out[attack][setting.name] == value


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
    resolved = [names.index(w) if isinstance(w, str) and w in names else w if isinstance(w, int)
                and 0 <= w < y.shape[1] else None for w in which]
    valid = bool(which) and None not in resolved and all(
        bool((~y[:, j]).all()) if adding else bool(y[:, j].all()) for j in resolved)
    try:
        t = (add if adding else hide)(y, which, names)
    except InvalidInputError as exc:
        assert "\n" not in str(exc)
        assert not valid, (which, "is a valid request but was refused")
        return
    assert valid
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
    valid = width == l and target.shape[0] in (1, y.shape[0]) and bool((target != y).any(1).all())
    try:
        t = custom(y, target)
    except InvalidInputError:
        assert not valid, "a valid target was refused"
        return
    assert valid and t.shape == y.shape and bool(((t != y).any(1)).all())
    assert torch.equal(t, target.expand_as(y))


@settings(max_examples=200, deadline=None)
@given(rows=LABELS, data=st.data())
def test_valid_hide_and_add_requests_are_accepted(rows, data):
    """Requests built to be valid: labels present in every example to hide, absent from every
    example to add (by name or index)."""
    y = torch.tensor(rows, dtype=torch.bool)
    names = [f"l{j}" for j in range(y.shape[1])]
    for adding, ok in ((False, y.all(0)), (True, (~y).all(0))):
        choices = ok.nonzero().flatten().tolist()
        if not choices:
            continue
        pick = data.draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3, unique=True))
        which = [names[j] if data.draw(st.booleans()) else j for j in pick]
        t = (add if adding else hide)(y, which, names)
        assert bool((t[:, pick] == adding).all()) and torch.equal(t[:, [j for j in range(y.shape[1]) if j not in pick]],
                                                                   y[:, [j for j in range(y.shape[1]) if j not in pick]])
