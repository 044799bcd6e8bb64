"""`mgvideo test CONFIG CHECKPOINT [--views K] [--out DIR]`: multi-view testing of trained weights."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from mgvideo.config import Config, load_config, override, resolve_recipe

DESCRIPTION = """Ensembles K temporal clips x test.crops spatial crops per video (sum of softmax scores; max
for Charades) and writes test_summary.json and per_class.csv. A video none of whose views can be read is left
out and named; more than test.max_failed_fraction of such videos stops the test (listed videos missing under
data.root are named, and counted, before any is decoded)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "test", help="multi-view test: K clips x 3 crops per video, top-1/top-5 (or mAP)",
        description=DESCRIPTION)
    parser.add_argument("config", help="the run's YAML (e.g. RUN/config.yaml) or a recipe name")
    parser.add_argument("checkpoint", type=Path, help="model_final.pt or a checkpoint such as last.pt")
    parser.add_argument("--views", type=int, default=None, help="temporal clips per video (test.clips)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: the checkpoint's run directory / test)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Options may also come after the overrides (argparse leaves them in the remainder).
    late = argparse.ArgumentParser(add_help=False)
    late.add_argument("--views", type=int, default=args.views)
    late.add_argument("--out", type=Path, default=args.out)
    extra, overrides = late.parse_known_args(args.overrides)
    args.views, args.out = extra.views, extra.out
    cfg = load_config(resolve_recipe(args.config), overrides)
    run_dir = args.checkpoint.parent.parent if args.checkpoint.parent.name == "checkpoints" else \
        args.checkpoint.parent
    out = Path(args.out or run_dir / "test")
    summary = evaluate_checkpoint(cfg, args.checkpoint, out, args.views)
    print(json.dumps(summary, indent=2))
    print(f"wrote {out / 'test_summary.json'} and {out / 'per_class.csv'} (per-class results)",
          file=sys.stderr)
    return 0


def evaluate_checkpoint(cfg: Config, weights_path: str | Path, out_dir: str | Path,
                        views: int | None = None) -> dict[str, Any]:
    """Multi-view test of saved weights (`model_final.pt` or a full checkpoint): `views` clips x crops
    per video; writes `test_summary.json` and `per_class.csv` into `out_dir` and returns the summary.
    Under torchrun each rank tests its share of the views."""
    # torch-heavy: imported only when testing
    from mgvideo.data.loader import build_loader
    from mgvideo.engine import builders, checkpoint
    from mgvideo.engine import distributed as D
    from mgvideo.engine.device import autocast_dtype, configure_device, select_device
    from mgvideo.engine.evaluate import Inputs, evaluate_videos
    from mgvideo.engine.init_from import check_class_count
    from mgvideo.multigrid.sampler import FixedShapeBatchSampler

    if views is not None:
        cfg = override(cfg, **{"test.clips": views})
    device = select_device(cfg.train.device)
    info = D.init(device)
    device = D.local_device(device, info)
    configure_device(device)
    weights = checkpoint.model_state(weights_path)  # read first: a bad file fails before any decoding
    net = builders.build_network(cfg, cfg.data.num_classes)
    check_class_count(net, weights, str(weights_path))  # names data.num_classes, not the architecture
    checkpoint.load_model_weights(net, weights, str(weights_path))
    net.to(device)
    shape = builders.build_schedule(cfg).full_shape(cfg.test.batch_size)
    dataset = builders.build_dataset(cfg, "test", shape)
    missing = builders.missing_line(cfg, "test", dataset)
    if missing and info.is_main:
        print(f"mgvideo test: {missing}", file=sys.stderr)
    sampler = FixedShapeBatchSampler(shape, len(dataset), cfg.test.batch_size, rank=info.rank,
                                     world_size=info.world_size)
    loader = build_loader(dataset, sampler, cfg.data.workers, device.type == "cuda", cfg.train.seed)
    ensemble = cfg.test.ensemble if cfg.test.ensemble != "auto" else ("max" if cfg.multi_label else "sum")
    inputs = Inputs(device, cfg.data.mean, cfg.data.std)
    summary, scores, labels = evaluate_videos(net, loader, inputs, info, ensemble, cfg.multi_label,
                                              cfg.test.max_failed_fraction,
                                              autocast_dtype(cfg, device))  # training's precision
    summary.update({"clips": cfg.test.clips, "crops": cfg.test.crops, "ensemble": ensemble,
                    "test_size": cfg.test.crop_size or cfg.data.crop, "weights": str(weights_path)})
    if info.is_main:
        write_report(Path(out_dir), summary, scores, labels, cfg)
    D.shutdown(info)
    return summary


def write_report(out: Path, summary: dict[str, Any], scores, labels, cfg: Config) -> None:
    """`test_summary.json`, and `per_class.csv` (top-1 or AP, and support, per class), in `out`."""
    from mgvideo.engine.evaluate import per_class_rows

    out.mkdir(parents=True, exist_ok=True)
    (out / "test_summary.json").write_text(json.dumps(summary, indent=2))
    rows = per_class_rows(scores, labels, cfg.multi_label, _class_names(cfg))
    with open(out / "per_class.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _class_names(cfg: Config) -> list[str]:
    """Class names from `classes.txt` in the data root when present (the synthetic set writes one)."""
    path = Path(cfg.data.root) / "classes.txt"
    return path.read_text().split("\n") if path.exists() else []
