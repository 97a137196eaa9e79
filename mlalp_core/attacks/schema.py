"""Each attack's settings, declared once: name, type, range or choices, default (the paper's), help.

Everything that hands settings to an attack goes through :meth:`Schema.parse`: the Python API
(``make_attack(..., box=False)``), the CLI's ``--set mla-lp.box=false``, the app's widgets,
``[attacks.mla-lp]`` in ``mlalp.toml`` and the settings read back from the results store. A value
is parsed exactly or refused with one line (:class:`~mlalp_core.errors.InvalidInputError`); it is
never reinterpreted: ``"False"`` is false, ``"maybe"`` is an error, ``1.5`` is not an integer, NaN
and infinities are refused, and an unknown name gets the list of known ones.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError

TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
NONE_WORDS = ("none", "auto")
#: Names users try as attack settings that are chosen elsewhere.
_ELSEWHERE = {"device": "the device is chosen with --device, MLALP_DEVICE or mlalp.toml's device",
              "threshold": "the threshold is the model's, or the app's sidebar"}
_INT_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Setting:
    """One setting. ``kind`` is bool, int, float or str (a choice among ``choices``).

    ``low``/``high`` bound numbers (``*_open`` excludes the bound itself); ``none_means`` lets
    the setting be None (written "auto"/"none" as text) and says what None does.
    """

    name: str
    kind: type
    default: Any
    help: str
    label: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    none_means: str = ""
    #: False for a setting the paper does not have (its default is mlalp's, not the paper's)
    from_paper: bool = True
    #: (another setting, its values) under which this one is used at all (empty: always); the
    #: app greys it out otherwise, and a run need not record it
    used_when: tuple[str, tuple[Any, ...]] | tuple[()] = ()

    def used_with(self, values: Mapping[str, Any]) -> bool:
        """Whether the other settings ``values`` make use of this one."""
        if not self.used_when:
            return True
        name, wanted = self.used_when
        return values.get(name) in wanted

    def used_note(self) -> str:
        """When the setting is used, in words ("" when always)."""
        if not self.used_when:
            return ""
        name, wanted = self.used_when
        shown = [str(v).lower() if isinstance(v, bool) else str(v) for v in wanted]
        return f"used only when {name} is {' or '.join(shown)}"

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ")

    def allowed(self) -> str:
        """What the setting accepts, in words (for errors, help texts and the README)."""
        if self.kind is bool:
            text = "true or false (also 1/0, yes/no)"
        elif self.choices:
            text = "one of " + ", ".join(self.choices)
        else:
            what = "an integer" if self.kind is int else "a finite number"
            if self.low is not None and self.high is not None:
                text = f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            elif self.low is not None:
                text = f"{what} {'>' if self.low_open else '>='} {self.low:g}"
            elif self.high is not None:
                text = f"{what} {'<' if self.high_open else '<='} {self.high:g}"
            else:
                text = what
        if self.none_means:
            text += f", or auto ({self.none_means})"
        return text

    def parse(self, value: Any, owner: str = "") -> Any:
        """``value`` (a Python value or text) as this setting's type, or InvalidInputError."""
        where = f"{owner}.{self.name}" if owner else self.name
        if isinstance(value, str):
            text = value.strip()
            if self.none_means and text.lower() in NONE_WORDS:
                return None
            return self._check(self._from_text(text, where), where, text)
        if value is None:
            if self.none_means:
                return None
            raise InvalidInputError(f"{where} must be {self.allowed()}, got nothing (None)")
        return self._check(self._from_value(value, where), where)

    # ---- parsing ----------------------------------------------------------------------------
    def _refuse(self, where: str, value: Any) -> InvalidInputError:
        return InvalidInputError(f"{where} must be {self.allowed()}, got {value!r}")

    def _from_text(self, text: str, where: str) -> Any:
        if self.kind is bool:
            low = text.lower()
            if low in TRUE_WORDS:
                return True
            if low in FALSE_WORDS:
                return False
            raise self._refuse(where, text)
        if self.kind is int:
            if not _INT_TEXT.fullmatch(text):
                raise self._refuse(where, text)
            return int(text)
        if self.kind is float:
            if not _FLOAT_TEXT.fullmatch(text):  # no nan, inf, hex or underscores
                raise self._refuse(where, text)
            return float(text)
        for choice in self.choices:
            if text.lower() == choice.lower():
                return choice
        raise self._refuse(where, text)

    def _from_value(self, value: Any, where: str) -> Any:
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, numbers.Integral) and int(value) in (0, 1):
                return bool(int(value))
            raise self._refuse(where, value)
        if isinstance(value, bool):  # True is an int in Python, never a number here
            raise self._refuse(where, value)
        if self.kind is int:
            if isinstance(value, numbers.Integral):
                return int(value)
            raise self._refuse(where, value)
        if self.kind is float:
            if isinstance(value, numbers.Real):
                return float(value)
            raise self._refuse(where, value)
        raise self._refuse(where, value)

    def _check(self, value: Any, where: str, shown: Any = None) -> Any:
        """Range checks; errors show the value as the user wrote it (``shown``, for text)."""
        if self.kind in (int, float):
            shown = value if shown is None else shown
            if not math.isfinite(value):
                raise self._refuse(where, shown)
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                raise self._refuse(where, shown)
            if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
                raise self._refuse(where, shown)
        return value


class Schema:
    """The settings of one attack, in the order they are shown."""

    def __init__(self, attack: str, settings: Iterable[Setting]) -> None:
        self.attack = attack
        self.settings: dict[str, Setting] = {}
        for s in settings:
            if s.name in self.settings:
                raise ValueError(f"{attack}: setting {s.name} declared twice")
            self.settings[s.name] = s
        for s in self.settings.values():  # a default must satisfy its own declaration
            if s.parse(s.default, attack) != s.default:
                raise ValueError(f"{attack}.{s.name}: default {s.default!r} is not canonical")
            if s.used_when and not self._takes(*s.used_when):
                raise ValueError(f"{attack}.{s.name}: used_when names no setting or values it does not take")

    def _takes(self, name: str, values: tuple[Any, ...]) -> bool:
        """Whether setting ``name`` exists and takes each of ``values`` as it is."""
        if name not in self.settings:
            return False
        try:
            return all(self.settings[name].parse(v, self.attack) == v for v in values)
        except InvalidInputError:
            return False

    def __iter__(self):
        return iter(self.settings.values())

    def __contains__(self, name: object) -> bool:
        return name in self.settings

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.settings)

    def defaults(self) -> dict[str, Any]:
        """The paper's settings."""
        return {s.name: s.default for s in self}

    def setting(self, name: str, origin: str = "") -> Setting:
        if name not in self.settings:
            where = f"{origin}: " if origin else ""
            hint = _ELSEWHERE.get(name, "")
            raise InvalidInputError(f"{where}{self.attack} has no setting {name!r}; known: {', '.join(self.names)}"
                                    + (f" ({hint})" if hint else ""))
        return self.settings[name]

    def parse(self, values: Mapping[str, Any] | None, origin: str = "", *, complete: bool = True) -> dict[str, Any]:
        """Typed, checked values; the defaults fill what is not given unless ``complete=False``."""
        out = self.defaults() if complete else {}
        prefix = f"{origin}: " if origin else ""
        for name, value in (values or {}).items():
            setting = self.setting(str(name), origin)
            try:
                out[setting.name] = setting.parse(value, self.attack)
            except InvalidInputError as exc:
                raise InvalidInputError(f"{prefix}{exc}") from None
        return out

    def unused(self, values: Mapping[str, Any]) -> set[str]:
        """The settings that ``values`` (complete) make no use of (:attr:`Setting.used_when`)."""
        return {s.name for s in self if not s.used_with(values)}

    def differences(self, values: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """name -> (value, the paper's) for every setting that differs from the paper's."""
        return {s.name: (values[s.name], s.default) for s in self if s.name in values and values[s.name] != s.default}

    def markdown(self) -> str:
        """A table of the settings (for docstrings and the README)."""
        rows = ["| setting | default (paper) | accepts | what it does |", "|---|---|---|---|"]
        for s in self:
            default = "auto" if s.default is None else str(s.default).lower() if s.kind is bool else f"{s.default!r}"
            rows.append(f"| `{s.name}` | {default} | {s.allowed()} | {s.help} |")
        return "\n".join(rows)


def parse_assignment(text: str) -> tuple[str, str, str]:
    """``attack.setting=value`` as (attack, setting, value text); the value is parsed by the schema."""
    lhs, eq, value = text.partition("=")
    attack, dot, name = lhs.partition(".")
    if not eq or not dot or not attack.strip() or not name.strip():
        raise InvalidInputError(f"--set takes ATTACK.SETTING=VALUE (e.g. mla-lp.box=false), got {text!r}")
    return attack.strip().lower(), name.strip(), value
