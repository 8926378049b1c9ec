"""The ``deepresolve`` command line.

Subcommands are registered in ``SUBCOMMANDS``: name -> (module path, one-line help). Each module
provides ``add_arguments(parser)`` and ``run_from_args(args) -> int``. To add a subcommand, add a line.

    deepresolve demo --out DIR        # synthetic set I end to end (figures + summary), see demo.py
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "demo": ("deepresolve_captum.demo",
             "reproduce the paper's synthetic experiment (set I; --set-two for set II): "
             "generate, train, run DeepResolve, write figures and a summary"),
}


def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="deepresolve",
        description="DeepResolve (Liu, Zeng & Gifford 2019) for PyTorch/Captum.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run_from_args(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
