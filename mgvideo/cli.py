"""The `mgvideo` command line: discovers subcommands in `mgvideo.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from mgvideo import commands
from mgvideo.errors import MgvideoError


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand module registered."""
    parser = argparse.ArgumentParser(prog="mgvideo", description="Multigrid training for video models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits with status 2 and a one-line message, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MgvideoError as err:
        print(f"mgvideo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
