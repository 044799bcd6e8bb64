"""`mgvideo data synth | check | prepare`: generate the built-in synthetic dataset (or Kinetics-like benchmark
videos), scan a dataset's videos, or transcode them into a multi-resolution store."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mgvideo.data import synthetic
from mgvideo.data.decode import FrameListReader, PyAVReader, truncation
from mgvideo.data.formats import FORMATS, annotation_formats, dataset_format, read_annotations
from mgvideo.errors import AnnotationError, VideoDecodeError

CHECK_HELP = """Scan every video an annotation file lists, without training. Each row is checked by opening
the file, reading its stream metadata and decoding its first and last frames (a seek near the end), which
finds a truncated file cheaply; with --full every frame is decoded, which also finds damage mid-stream.
Exits 0 when every row is readable, 2 otherwise (bad input, as every mgvideo command); malformed rows
count as bad. Label names without --classes are only checked against each other: a warning says so."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="datasets: generate the synthetic set, check videos")
    sub = parser.add_subparsers(dest="data_command", required=True)

    synth = sub.add_parser("synth", help="write the built-in synthetic video dataset")
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", choices=sorted(synthetic.SIZES), default="default")
    synth.add_argument("--kinetics-like", type=int, metavar="N", default=0,
                       help="instead: N benchmark videos at 340x256, H.264, GOP 32, 30 fps, 10 s, with "
                       "OUT/train.csv (what `bench data` reads)")
    synth.add_argument("--workers", type=int, default=1, help="processes for --kinetics-like")
    synth.set_defaults(func=run_synth)

    prep = sub.add_parser("prepare", help="transcode videos into a multi-resolution store (data.store)",
                          description=PREPARE_HELP)
    prep.add_argument("list", help="annotation file whose videos are stored")
    prep.add_argument("--config", required=True, help="the recipe: its schedule's crops and scale jitter "
                      "decide the short sides stored")
    prep.add_argument("--root", help="directory the listed paths are relative to (default: its folder); "
                      "entries are keyed by path relative to it, so train with data.root at this folder")
    prep.add_argument("--out", required=True, help="the store folder (then set data.store to it)")
    prep.add_argument("--workers", type=int, default=1, help="transcoding processes")
    prep.add_argument("--max-gb", type=float, default=0.0, help="disk bound in GB (0: none); videos past "
                      "it are left to their originals")
    prep.add_argument("--gop", type=int, default=0, help="keyframe interval of the copies (default: "
                      "the store's)")
    prep.add_argument("--json", action="store_true", help="print the summary as JSON")
    prep.set_defaults(func=run_prepare)

    check = sub.add_parser("check", help="open and decode every listed video", description=CHECK_HELP)
    check.add_argument("annotation", help="annotation file (list, split JSON or frame-list CSV)")
    check.add_argument("--root", help="directory the listed paths are relative to (default: the "
                       "annotation file's folder)")
    check.add_argument("--format", choices=annotation_formats(), default="kinetics")
    check.add_argument("--labels", help="ssv2 only: the labels JSON (template -> id)")
    check.add_argument("--classes", help="kinetics only: class-list file for label names")
    check.add_argument("--ext", default=".webm", help="ssv2 only: video file extension (default .webm)")
    check.add_argument("--full", action="store_true", help="decode every frame, not only the first and last")
    check.add_argument("--json", action="store_true", help='print {"ok": N, "bad": [...]} and nothing else')
    check.set_defaults(func=run_check)


PREPARE_HELP = """Transcode each listed video once into the short sides the recipe's scale jitter needs (both
ends of the jitter range at every crop of its schedule, and the test size; never above the video's own),
with a short GOP and no B-frames, so that coarse clips decode a small copy and only the frames they show.
Originals are kept. Resumable: videos already stored are skipped, and an entry appears whole or not at all.
Entries are keyed by each video's path relative to --root (STORE/index.json), so the store may be moved or
copied to a node's local disk, with or without the originals; a store made by an older mgvideo is indexed
here without transcoding. A video that fails is named, counted (STORE/failed.json) and read from its
original in training."""


def run_synth(args: argparse.Namespace) -> int:
    """Call the synthetic generator and print what it wrote."""
    if args.kinetics_like:
        from mgvideo.data.kinetics_like import generate_kinetics_like

        summary = generate_kinetics_like(args.out, args.kinetics_like, args.seed, args.workers)
        print(json.dumps(summary, indent=2))
        return 0
    summary = synthetic.generate(args.out, seed=args.seed, size=args.size)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Fill the store and print its summary: stored, kept, failed (named), left out, disk use."""
    from mgvideo.bench.bench_config import load_any_config
    from mgvideo.data import store
    from mgvideo.data.prepare import prepare_store, recipe_store_sides
    from mgvideo.engine.builders import build_schedule

    cfg = load_any_config(args.config)
    fmt = dataset_format(cfg.data.dataset)
    if not fmt.plain_list:
        raise AnnotationError(f"{args.list}: data prepare reads Kinetics-style lists (path label); "
                              f"the recipe's dataset is {cfg.data.dataset}")
    errors: list[AnnotationError] = []
    root = args.root or os.path.dirname(os.path.abspath(args.list))  # the list's paths and the keys: one root
    annotations = fmt.reader(args.list, root, errors=errors)
    for err in errors:
        print(f"{args.list}:{err.line}: {err}", file=sys.stderr)
    paths = [r.path for r in annotations.records if r.frame_paths is None]
    sides = recipe_store_sides(cfg, build_schedule(cfg))
    print(f"store {args.out}: {len(paths)} videos at short sides {sides}", file=sys.stderr)
    summary = prepare_store(paths, args.out, sides, args.workers, int(args.max_gb * 1e9),
                            args.gop or store.GOP, log=lambda m: print(m, file=sys.stderr), root=root)
    print(f"store {args.out}: entries keyed by path relative to {root}; train with data.store set to it "
          "(or a copy) and data.root at that folder (or a copy)", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['done']} transcoded, {summary['kept']} already stored, {len(summary['failed'])} "
              f"failed, {summary['left_out']} left out by --max-gb; {summary['bytes'] / 1e9:.3f} GB for "
              f"{summary['seconds'] / 3600:.3f} h of video ({summary['gb_per_hour']:.2f} GB per hour)")
    return 0 if not summary["failed"] and not errors else 1


def check_video(record, full: bool = False) -> None:
    """Raise VideoDecodeError unless the record's video decodes: its first and last frames (or, `full`,
    every frame, with no decode error) and as many frames as its container states."""
    if record.frame_paths:
        reader = FrameListReader(record.frame_paths)
        reader.read(range(reader.num_frames) if full else [0, reader.num_frames - 1])
        return
    with PyAVReader(record.path) as reader:
        if full:
            reader.scan()
        else:
            reader.read([0])
            reader.read([reader.stated_frames - 2, reader.stated_frames - 1])  # seeks near the end
        problem = truncation(reader)
        if problem is None and reader.errors:
            more = f" (and {len(reader.errors) - 1} more)" if len(reader.errors) > 1 else ""
            problem = f"decode error: {reader.errors[0]}{more}"
        if problem is not None:
            raise VideoDecodeError(f"{record.path}: {problem}")


def run_check(args: argparse.Namespace) -> int:
    """Scan the dataset; report good and bad rows (exit 2 if any row is bad)."""
    options = check_options(args)
    errors: list[AnnotationError] = []
    annotations = read_annotations(args.format, args.annotation, args.root, errors=errors, **options)
    bad = [{"line": err.line, "path": args.annotation, "reason": str(err)} for err in errors]
    ok = 0
    for record in annotations.records:
        try:
            check_video(record, args.full)
            ok += 1
        except VideoDecodeError as err:
            bad.append({"line": record.line, "path": record.path, "reason": str(err)})
    bad.sort(key=lambda b: b["line"])
    warning = unchecked_names_warning(args, annotations)
    if args.json:
        print(json.dumps({"ok": ok, "bad": bad, **({"warning": warning} if warning else {})}))
    else:
        for b in bad:  # an annotation error names its file and line already
            named = b["reason"].startswith(f"{args.annotation}:")
            print(("" if named else f"{args.annotation}:{b['line']}: ") + b["reason"], file=sys.stderr)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{ok} readable, {len(bad)} bad")
    return 0 if not bad else 2


def check_options(args: argparse.Namespace) -> dict:
    """The reader options of `--format`: its labels file, from the flag named after its labels option
    (--labels, --classes; required where the format has a default file), with its `data.*` options from
    the flags of the same names (--ext)."""
    fmt = FORMATS[args.format]
    options = {option: getattr(args, option) for option, _ in fmt.config_options if hasattr(args, option)}
    labels = getattr(args, fmt.labels_option, None) if fmt.labels_option else None
    if fmt.labels_default and not labels:
        metavar = fmt.labels_default.upper().replace(".", "_")  # labels.json -> LABELS_JSON
        raise AnnotationError(f"{args.annotation}: --format {args.format} needs --{fmt.labels_option} "
                              f"{metavar}")
    if labels:
        options[fmt.labels_option] = labels
    return options


def unchecked_names_warning(args: argparse.Namespace, annotations) -> str:
    """For a list labelled by class names (Kinetics) but checked without its optional class list
    (--classes): every name in the file became a class, so a misspelt one passed unnoticed."""
    fmt = FORMATS[args.format]
    optional = fmt.labels_option and not fmt.labels_default
    if not optional or getattr(args, fmt.labels_option, None) or not annotations.class_names:
        return ""
    names, flag = annotations.class_names, f"--{fmt.labels_option}"
    return (f"{args.annotation}: labels are class names and no {flag} was given, so each of its "
            f"{len(names)} distinct names counts as a class and a misspelt one is not caught; give "
            f"{flag} FILE (the list data.labels_file names) to check them")
