"""mlalp: multi-label adversarial examples by linear programming (MLA-LP) and its baselines.

The data flow is one-way: image -> [0,1] tensor (``data``) -> model (``models``, normalises
inside) -> target y* (``attacks.targets``) -> attack (``attacks``, using the Jacobian and ``lp``)
-> ``AttackResult`` -> metrics, results store, reports (``experiments``) and figures (``viz``).

From a notebook, three lines (names are imported on first use, so ``import mlalp_core`` stays
fast)::

    import mlalp_core as ml
    model = ml.load_model("demo-gcn")
    result = ml.attack("mla-lp", model, images, ml.hide_one(labels))

``ml.wrap(module, labels=..., input_size=..., mean=..., std=...)`` makes any ``nn.Module`` a model
every attack accepts; ``ml.register(model)`` also makes it known by name.
"""

from __future__ import annotations

import importlib
import os as _os
from typing import Any

from .version import __version__

# Before torch loads its OpenMP runtime: threads that wait sleep instead of spinning. On a CPU
# shared with other busy processes, spinning threads stall each other at every parallel region
# (measured on a 2-core machine with one core busy elsewhere: the demo model's MLA-LP Jacobian
# took 2.9 s with the default policy and 0.02 s with this one). An explicit setting wins; it has
# no effect if torch was imported before mlalp_core.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: The notebook API: name -> module that defines it.
_API: dict[str, str] = {
    "load_model": "mlalp_core.models.registry",
    "list_models": "mlalp_core.models.registry",
    "register": "mlalp_core.models.registry",
    "wrap": "mlalp_core.models.wrap",
    "load_dataset": "mlalp_core.data.registry",
    "list_datasets": "mlalp_core.data.registry",
    "stack_images": "mlalp_core.data.base",
    "load_image": "mlalp_core.data.images",
    "attack": "mlalp_core.attacks",
    "make_attack": "mlalp_core.attacks",
    "ATTACKS": "mlalp_core.attacks",
    "AttackResult": "mlalp_core.attacks",
    "hide_one": "mlalp_core.attacks.targets",
    "hide": "mlalp_core.attacks.targets",
    "add": "mlalp_core.attacks.targets",
    "custom": "mlalp_core.attacks.targets",
    "attack_metrics": "mlalp_core.experiments.metrics",
    "BenchConfig": "mlalp_core.experiments.runner",
    "run_benchmark": "mlalp_core.experiments.runner",
    "solve_linf": "mlalp_core.lp",
    "resolve_device": "mlalp_core.device",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mlalp_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
