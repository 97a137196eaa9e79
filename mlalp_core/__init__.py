"""mlalp: multi-label adversarial examples by linear programming (MLA-LP) and its baselines.

The data flow is one-way: image -> [0,1] tensor (``data``) -> model (``models``, normalises
inside) -> target y* (``targets``) -> attack (``attacks``, using ``jacobian`` and ``lp``) ->
``AttackResult`` -> metrics, results store and figures.
"""

import os as _os

__version__ = "0.1.0"

# Before torch loads its OpenMP runtime: threads that wait sleep instead of spinning. On a CPU
# shared with other busy processes, spinning threads stall each other at every parallel region
# (measured on a 2-core machine with one core busy elsewhere: the demo model's MLA-LP Jacobian
# took 2.9 s with the default policy and 0.02 s with this one). An explicit setting wins; it has
# no effect if torch was imported before mlalp_core.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
