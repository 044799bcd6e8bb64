"""`mgvideo test CONFIG CHECKPOINT [--views K] [--out DIR]`: multi-view testing of trained weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mgvideo.config import load_config, resolve_recipe


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "test", help="multi-view test: K clips x 3 crops per video, top-1/top-5 (or mAP)",
        description="Ensembles K temporal clips x test.crops spatial crops per video (sum of softmax "
                    "scores; max for Charades) and writes test_summary.json and per_class.csv.")
    parser.add_argument("config", help="the run's YAML (e.g. RUN/config.yaml) or a recipe name")
    parser.add_argument("checkpoint", type=Path, help="model_final.pt or a checkpoint such as last.pt")
    parser.add_argument("--views", type=int, default=None, help="temporal clips per video (test.clips)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: the checkpoint's run directory / test)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mgvideo.engine.evaluate import evaluate_checkpoint  # torch-heavy: only imported when testing

    # Options may also come after the overrides (argparse leaves them in the remainder).
    late = argparse.ArgumentParser(add_help=False)
    late.add_argument("--views", type=int, default=args.views)
    late.add_argument("--out", type=Path, default=args.out)
    extra, overrides = late.parse_known_args(args.overrides)
    args.views, args.out = extra.views, extra.out
    cfg = load_config(resolve_recipe(args.config), overrides)
    run_dir = args.checkpoint.parent.parent if args.checkpoint.parent.name == "checkpoints" else \
        args.checkpoint.parent
    summary = evaluate_checkpoint(cfg, args.checkpoint, args.out or run_dir / "test", args.views)
    print(json.dumps(summary, indent=2))
    return 0
