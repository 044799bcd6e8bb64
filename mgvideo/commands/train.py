"""`mgvideo train CONFIG [--out DIR] [--force] [key=value ...]`: train, or resume the run in DIR."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mgvideo.config import load_config, resolve_recipe


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model (multigrid or baseline); rerun the same command to resume",
        description="Train from a YAML recipe. Running the same command again resumes from "
                    "DIR/checkpoints/last.pt. Under torchrun, each process trains one shard (DDP).")
    parser.add_argument("config", help="a YAML recipe, e.g. configs/synthetic/tiny.yaml or synthetic/tiny")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                        help="dotted overrides parsed as YAML, e.g. solver.base_lr=0.05 data.workers=2")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<recipe name>)")
    parser.add_argument("--force", action="store_true",
                        help="resume even if the checkpoint's config/schedule fingerprint differs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mgvideo.engine.trainer import train  # torch-heavy: only imported when training

    # Options may come after the overrides too (argparse leaves them in the remainder).
    late = argparse.ArgumentParser(add_help=False)
    late.add_argument("--out", type=Path, default=None)
    late.add_argument("--force", action="store_true")
    extra, overrides = late.parse_known_args(args.overrides)
    path = resolve_recipe(args.config)
    cfg = load_config(path, overrides)
    out = extra.out or args.out or Path("runs") / path.stem
    summary = train(cfg, out, force=args.force or extra.force)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary for the run
        print(json.dumps(summary, indent=2))
    return 0
