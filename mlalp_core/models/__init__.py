"""Classifiers: the contract (:mod:`.base`), the demo models, ML-GCN, ML-LIW, users' models and
the registry that finds them by name. The names below are the one list of built-in models (kept
here, free of torch, for the command line's choices)."""

#: The bundled demo models.
DEMO_MODEL_NAMES: tuple[str, ...] = ("demo-gcn", "demo-liw")
#: The paper's models (they need their checkpoints).
PAPER_MODEL_NAMES: tuple[str, ...] = ("ml-gcn", "ml-liw")
#: Names a user's manifest may not take.
BUILTIN_NAMES: tuple[str, ...] = DEMO_MODEL_NAMES + PAPER_MODEL_NAMES
