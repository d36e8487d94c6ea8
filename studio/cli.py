"""The command-line interface: ``python -m studio COMMAND --help``.

Each capability adds its subcommand as a module in ``studio/commands/`` exposing
``register(subparsers)``; list it in ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .core.errors import StudioError

COMMANDS: list[str] = [
    "models",
    "generate",
    "edit",
    "bench",
    "export",
    "apply",
    "concept",
    "rank",
    "knob",
    "dissect",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m studio",
        description="Neuron Studio: look inside image generators and change them by hand.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"studio.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except StudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
