"""The `mgvideo` command line: discovers subcommands in `mgvideo.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from mgvideo import commands
from mgvideo.errors import MgvideoError

# Commands whose work is checkpointed, so that rerunning after Ctrl-C continues where it stopped.
RESUMABLE = ("train",)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand module registered."""
    parser = argparse.ArgumentParser(prog="mgvideo", description="Multigrid training for video models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits with status 2 and a one-line message, never a traceback. A missing
    file is bad input too; Ctrl-C exits with 130, a closed pipe (`| head`) quietly."""
    args = build_parser().parse_args(argv)
    name = f"mgvideo {args.command}"
    try:
        return int(args.func(args) or 0)
    except MgvideoError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as err:
        where = err.filename if err.filename is not None else ""
        print(f"{name}: error: {where}{': ' if where else ''}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; rerun the same command to resume" if args.command in RESUMABLE else ""
        print(f"\n{name}: interrupted (Ctrl-C){hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mgvideo plan | head`): nothing more to say, and no flush error at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
