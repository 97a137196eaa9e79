"""The ``mlalp`` command: :mod:`.main` builds the parser and runs a command; one module per
command group (:mod:`.bench`: bench and report; :mod:`.models`: models, datasets, check-model,
train, eval; :mod:`.demo`: the bundled demo); :mod:`.output` checks where files are written."""

from .main import main

__all__ = ["main"]
