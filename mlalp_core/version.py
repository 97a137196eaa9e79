"""The package's version, in a module of its own: the results store records it with every run
and ``mlalp --version`` prints it, and neither may import the package's ``__init__`` (whose
notebook API imports the whole library on first use). Keep it equal to pyproject.toml's."""

__version__ = "0.1.0"
