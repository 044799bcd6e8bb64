"""`mgvideo bench ...`: benchmarks that print figures; each lives in `mgvideo.bench`."""

from __future__ import annotations

import importlib
import pkgutil

from mgvideo import bench


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: data loading, time-to-accuracy")
    sub = parser.add_subparsers(dest="bench", required=True)
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{bench.__name__}.{info.name}")
        if hasattr(module, "register"):  # helper modules (e.g. tta_report) add no subcommand
            module.register(sub)
