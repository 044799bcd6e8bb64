"""`mgvideo models`: list the model presets with their parameter count and cost per clip."""

from __future__ import annotations

import argparse
import json

from mgvideo.models.flops import preset_costs
from mgvideo.models.zoo import PRESETS


def register(subparsers) -> None:
    """Add the `models` subcommand."""
    parser = subparsers.add_parser(
        "models", help="list model presets with parameters and GFLOPs (multiply-adds) per clip"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument("--num-classes", type=int, default=400, help="classifier size (default 400)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print every preset's params and GFLOPs (multiply-adds, as PySlowFast reports) at its default shape."""
    rows = [preset_costs(name, args.num_classes) for name in PRESETS]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'model':<20}{'params (M)':>12}{'GFLOPs':>10}{'frames':>8}{'crop':>6}  sampling rate")
    for row in rows:
        rate = PRESETS[row["name"]].sampling_rate
        print(
            f"{row['name']:<20}{row['params'] / 1e6:>12.2f}{row['gflops']:>10.2f}"
            f"{row['frames']:>8}{row['crop']:>6}  {rate}"
        )
    print("GFLOPs = 10^9 multiply-adds for one clip (one view), counted by torch.utils.flop_counter.")
    return 0
