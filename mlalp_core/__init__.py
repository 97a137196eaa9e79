"""mlalp: multi-label adversarial examples by linear programming (MLA-LP) and its baselines.

The data flow is one-way: image -> [0,1] tensor (``data``) -> model (``models``, normalises
inside) -> target y* (``targets``) -> attack (``attacks``, using ``jacobian`` and ``lp``) ->
``AttackResult`` -> metrics, results store and figures.
"""

__version__ = "0.1.0"
