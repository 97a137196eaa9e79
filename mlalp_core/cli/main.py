"""The ``mlalp`` command line.

Each subcommand is a small function ``_cmd_<name>(args) -> int``; errors of the library
(:class:`~mlalp_core.errors.MlalpError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import MlalpError
from ..version import __version__


def _cmd_devices(args: argparse.Namespace) -> int:
    from ..device import available_devices, describe_device

    print("default:", describe_device(args.device))
    print("available:", ", ".join(available_devices()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlalp",
        description="Multi-label adversarial examples by linear programming (MLA-LP) and its baselines.",
        epilog="examples:\n"
               "  mlalp models\n"
               "  mlalp bench --models demo-gcn demo-liw --data demo --attacks all --out tables/\n"
               "  mlalp report --format latex\n"
               "  mlalp check-model ml-gcn --checkpoint voc_checkpoint.pth.tar --word-vectors voc_glove_word2vec.pkl\n"
               "app: streamlit run app.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mlalp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("devices", help="show the device mlalp would use and the ones available")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    p.set_defaults(func=_cmd_devices)

    # Subcommands of other modules register themselves here.
    for register in _registrars():
        register(sub)
    return parser


def _registrars():
    """Functions ``register(subparsers)`` of the modules that add subcommands."""
    import importlib

    found = []
    for mod_name, attr in _SUBCOMMAND_MODULES:
        mod = importlib.import_module(mod_name)
        found.append(getattr(mod, attr))
    return found


#: (module, function) pairs; each function adds its subparsers. Imports stay inside the commands.
#: Whole module names, so that tests/test_architecture.py sees these imports.
_SUBCOMMAND_MODULES: list[tuple[str, str]] = [("mlalp_core.cli.attack", "register"), ("mlalp_core.cli.bench", "register"),
                                               ("mlalp_core.cli.models", "register"), ("mlalp_core.cli.demo", "register")]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from ..device import check_environment
        from ..settings import load_settings

        load_settings()  # mlalp.toml and the MLALP_* settings, each parsed before any work
        for warning in check_environment():
            print(f"mlalp {args.command}: warning: {warning}", file=sys.stderr)
        return int(args.func(args) or 0)
    except MlalpError as exc:
        print(f"mlalp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlalp {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130

