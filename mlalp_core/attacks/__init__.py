"""The five attacks behind one interface (:class:`~mlalp_core.attacks.base.Attack`).

``ATTACKS`` maps each attack's name to its class; ``make_attack(name, model, **settings)``
builds one with the paper's defaults for every setting not given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, InvalidInputError, MlalpError
from .base import Attack, AttackCancelled, AttackResult, AttackRun, ProgressFn, success_mask
from .bim import BIM
from .carlini_wagner import MLCW, MLRank1, MLRank2
from .fgsm import FGSM
from .mifgsm import MIFGSM
from .ml_deepfool import MLDeepFool
from .mlalp import MLALP
from .pgd import PGD, PGDL2
from .schema import Schema, Setting

if TYPE_CHECKING:
    from ..settings import Settings

#: name -> class: the paper's five (MLA-LP first: it is the subject), then the field's gradient
#: attacks (beyond the paper; l_inf, and PGD also in l_2).
ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (MLALP, MLDeepFool, MLCW, MLRank1, MLRank2, FGSM, BIM, PGD, MIFGSM, PGDL2)
}
#: The paper's five attacks (its Table III and Fig. 1).
PAPER_ATTACKS: tuple[str, ...] = ("mla-lp", "ml-deepfool", "ml-cw", "ml-rank1", "ml-rank2")

#: Display names as the paper writes them.
DISPLAY_NAMES: dict[str, str] = {name: cls.display_name for name, cls in ATTACKS.items()}

#: Named sets of settings on top of the paper's: "quick" cuts the CW family's budget for a first
#: look on a CPU (100 Adam iterations x 3 binary-search steps instead of 1000 x 10).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {},
    "quick": {a: {"max_iterations": 100, "binary_search_steps": 3} for a in ("ml-cw", "ml-rank1", "ml-rank2")},
}


def attack_class(name: str) -> type[Attack]:
    """The attack called ``name`` (case and surrounding spaces ignored), or a one-line error."""
    key = str(name).strip().lower()
    if key not in ATTACKS:
        raise InvalidInputError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return ATTACKS[key]


def parse_settings(name: str, values: Mapping[str, Any] | None, origin: str = "", *,
                   complete: bool = True) -> dict[str, Any]:
    """An attack's settings, typed and checked by its schema (defaults filled unless ``complete=False``)."""
    return attack_class(name).schema.parse(values, origin, complete=complete)


def file_settings(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """mlalp.toml's ``[attacks.<name>]`` tables (of ``settings``, else :func:`load_settings`'s),
    each parsed by its attack's schema: name -> the settings it sets. An error is one line naming
    the file and the table."""
    from ..settings import load_settings

    s = load_settings() if settings is None else settings
    origin = str(s.config_file) if s.sources.get("attacks") == "file" else "settings override"
    out: dict[str, dict[str, Any]] = {}
    for name, table in s.attacks.items():
        try:
            out[str(name).strip().lower()] = parse_settings(name, table, f"{origin} [attacks.{name}]", complete=False)
        except MlalpError as exc:
            raise ConfigurationError(str(exc) if origin in str(exc) else f"{origin}: {exc}") from None
    return out


def make_attack(name: str, model: Any, **settings: Any) -> Attack:
    """Build an attack by name; settings not given take the paper's values. ``threshold`` and
    ``device`` are passed on; every other keyword is parsed by the attack's schema."""
    return attack_class(name)(model, **settings)


def attack(name: str, model: Any, images: Any, target: Any, *, progress: ProgressFn | None = None,
           example_ids: Sequence[str] | None = None, **settings: Any) -> AttackResult:
    """Run one attack on a batch: ``images`` (B, 3, H, W) in [0,1] at the model's size, ``target``
    y* (B, l) as bool, {0,1} or {-1,+1} (e.g. ``hide_one(labels)``); settings as keywords.
    ``example_ids`` name the images in a refusal (a model whose outputs on one are broken)."""
    return make_attack(name, model, **settings)(images, target, progress=progress, example_ids=example_ids)


__all__ = ["ATTACKS", "DISPLAY_NAMES", "Attack", "AttackCancelled", "AttackResult", "AttackRun", "ProgressFn",
           "PAPER_ATTACKS", "PRESETS", "Schema", "Setting", "attack", "attack_class", "file_settings", "make_attack", "parse_settings", "success_mask", "MLALP", "MLDeepFool", "MLCW", "MLRank1", "MLRank2"]
