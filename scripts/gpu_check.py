"""Helpers of scripts/gpu_check.sh: the loader measurement and the report.

    python scripts/gpu_check.py syncs CONFIG OUT.json [key=value ...]
    python scripts/gpu_check.py loader CONFIG OUT.json [--workers N] [--clips K] [key=value ...]
    python scripts/gpu_check.py report OUTDIR

`report` reads whatever parts have finished in OUTDIR (profile.json, shapes/metrics.jsonl, loader.json,
tta.json) and writes gpu_check.md and gpu_check.json; the shell script calls it after every part, so a
timeout still leaves the finished results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from pathlib import Path


def syncs(args: argparse.Namespace) -> None:
    """Train a few steps with host syncs forbidden: CUDA's sync debug mode on a GPU, and on the CPU the
    Tensor methods that read a value. Writes which steps ran and the first sync met, if any."""
    import tempfile

    from mgvideo.config import load_config
    from mgvideo.engine.run import build_run
    from mgvideo.engine.trainer import close_window, train_step

    run = build_run(load_config(args.config, args.overrides), Path(tempfile.mkdtemp()))
    run.data.sampler.set_epoch(run.schedule.max_epoch - 1)
    loaded = iter(run.data.loader)
    batches = [next(loaded) for _ in range(args.steps)]
    for batch in batches:  # warm-up at these shapes (cuDNN picks its kernels) before the checked steps
        train_step(run, batch, lr=0.01)
    result = {"device": run.inputs.device.type, "steps": 0, "sync": None}
    with _no_syncs(run.inputs.device):
        try:
            for step, batch in enumerate(batches, 1):
                loss, correct, clips = train_step(run, batch, lr=0.01)
                run.window.add(step, 0, clips, loss, correct, batch.skipped, 0.01, 0.0, 0.0)
                result["steps"] = step
        except RuntimeError as err:  # CUDA's sync debug mode raises RuntimeError
            result["sync"] = str(err).splitlines()[0]
    run.state.step = result["steps"]
    close_window(run, 0.0)  # the log point's sync, allowed
    run.log.close()
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"syncs: {result}")
    if result["sync"]:
        sys.exit(1)


@contextlib.contextmanager
def _no_syncs(device):
    import torch

    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return
    saved = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__", "__float__")}

    def refuse(self, *args):
        raise RuntimeError("a Tensor value was read on the host during a training step")

    for name in saved:
        setattr(torch.Tensor, name, refuse)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def loader(args: argparse.Namespace) -> None:
    """Clips/s of the training loader at the schedule's coarsest shape, with `--workers` processes."""
    from mgvideo.bench.data import distinct_shapes, loader_rate
    from mgvideo.config import load_config
    from mgvideo.data.loader import resolve_workers
    from mgvideo.data.prepare import ensure_synthetic_data
    from mgvideo.engine import builders

    cfg = load_config(args.config, args.overrides)
    ensure_synthetic_data(cfg)
    batch = builders.per_device_batch(cfg, 1)
    size, shape = distinct_shapes(builders.build_schedule(cfg), batch)[0]
    annotations = builders.read_split(cfg, cfg.data.train_list)
    workers = args.workers or resolve_workers(-1)
    rate = loader_rate(annotations, shape, size, workers, resize=True, clips=args.clips)
    row = {"frames": shape.frames, "crop": shape.crop, "batch": size, "workers": workers,
           "cores": os.cpu_count(), "clips": args.clips, "clips_per_s": round(rate, 1)}
    Path(args.out).write_text(json.dumps(row, indent=2))
    print(f"loader at the coarsest shape {shape.frames}x{shape.crop} (batch {size}), {workers} workers: "
          f"{rate:.1f} clips/s")


def shape_rows(records: list[dict]) -> list[dict]:
    """Per (T, S) of a training run: median ms/iteration and data wait, and the ratio to the full shape
    (the last shape trained). The first record of a shape is left out when there are others (cuDNN picks
    its kernels there)."""
    its = [r for r in records if r["kind"] == "train"]
    by_shape: dict[tuple[int, int], list[dict]] = {}
    for r in its:
        by_shape.setdefault((r["frames"], r["crop"]), []).append(r)
    rows = []
    for (frames, crop), group in by_shape.items():
        kept = group[1:] or group
        ms = [1000 * r["batch"] / r["clips_per_s"] / r.get("iterations", 1) for r in kept]
        per_iteration = kept[-1]["batch"] // kept[-1].get("iterations", 1)
        rows.append({"frames": frames, "crop": crop, "batch": per_iteration,
                     "iterations": sum(r.get("iterations", 1) for r in group),
                     "ms_per_iter": round(statistics.median(ms), 1),
                     "data_wait": round(statistics.median(r["data_wait"] for r in kept), 3)})
    if rows:
        full = next(r for r in rows if (r["frames"], r["crop"]) == (its[-1]["frames"], its[-1]["crop"]))
        for row in rows:
            row["vs_full"] = round(row["ms_per_iter"] / full["ms_per_iter"], 2)
    return rows


def prepare(args: argparse.Namespace) -> None:
    """Generate a config's synthetic set (if absent) ahead of the part that trains on it."""
    from mgvideo.config import load_config
    from mgvideo.data.prepare import ensure_synthetic_data

    ensure_synthetic_data(load_config(args.config))


def report(args: argparse.Namespace) -> None:
    """Collect the finished parts into gpu_check.json and a markdown table gpu_check.md."""
    out = Path(args.outdir)
    result: dict = {}
    if (out / "env.json").exists():
        result["env"] = json.loads((out / "env.json").read_text())
    if (out / "syncs.json").exists():
        result["syncs"] = json.loads((out / "syncs.json").read_text())
    for name in ("profile", "profile_cf"):
        if (out / f"{name}.json").exists():
            result[name] = json.loads((out / f"{name}.json").read_text())
    if (out / "shapes" / "metrics.jsonl").exists():
        records = [json.loads(x) for x in (out / "shapes" / "metrics.jsonl").read_text().splitlines() if x]
        result["train_shapes"] = shape_rows(records)
    if (out / "loader.json").exists():
        result["loader"] = json.loads((out / "loader.json").read_text())
    for name in ("tta", "vit"):  # the CNN's and the ViT's time to accuracy
        if (out / f"{name}.json").exists():
            tta = json.loads((out / f"{name}.json").read_text())
            result[name] = {k: tta.get(k) for k in ("speedup", "final_top1_delta", "target_top1", "variants",
                                                    "bench_minutes")}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_check.md").write_text(markdown(result, out))
    print(f"gpu_check: wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'} ({', '.join(result)})")


def profile_table(rows: list[dict], contiguous: list[dict] | None) -> list[str]:
    """mgvideo profile's rows (channels-last), with the default memory format's ms/iter beside them."""
    lines = ["## Model cost per shape (mgvideo profile: forward + backward, no data)", "",
             "| batch | T | S | BN groups | ms/iter | clips/s | peak MB | vs full | ms/iter, contiguous |",
             "|---" * 9 + "|"]
    other = {(r["batch"], r["frames"], r["crop"], r.get("bn_groups")): r for r in contiguous or []}
    for r in rows:
        cf = other.get((r["batch"], r["frames"], r["crop"], r.get("bn_groups")))
        contiguous_ms = f"{1000 * cf['sec_per_iter']:.1f}" if cf else "-"
        lines.append(f"| {r['batch']} | {r['frames']} | {r['crop']} | {r.get('bn_groups', '')} | "
                     f"{1000 * r['sec_per_iter']:.1f} | {r['clips_per_sec']:.1f} | {r['peak_mb']:.0f} | "
                     f"{r['time_ratio']:.2f} | {contiguous_ms} |")
    return lines + [""]


def markdown(result: dict, out: Path) -> str:
    """The report's tables, one section per finished part."""
    lines = ["# gpu_check", ""]
    if "env" in result:
        lines += [", ".join(f"{k}: {v}" for k, v in result["env"].items()), ""]
    if "syncs" in result:
        r = result["syncs"]
        verdict = f"one in step {r['steps'] + 1}: {r['sync']}" if r["sync"] else f"none in {r['steps']} steps"
        lines += [f"Host syncs between log points ({r['device']}): {verdict}", ""]
    if "profile" in result:
        lines += profile_table(result["profile"], result.get("profile_cf"))
    if "train_shapes" in result:
        lines += ["## Training per shape (mgvideo train, loader included; medians)", "",
                  "| T | S | batch | iterations | ms/iter | data wait | vs full |", "|---" * 7 + "|"]
        lines += [f"| {r['frames']} | {r['crop']} | {r['batch']} | {r['iterations']} | {r['ms_per_iter']} | "
                  f"{r['data_wait']:.3f} | {r.get('vs_full', '')} |" for r in result["train_shapes"]]
        lines.append("")
    if "loader" in result:
        r = result["loader"]
        lines += ["## Loader at the coarsest shape", "",
                  f"{r['clips_per_s']} clips/s at {r['frames']}x{r['crop']} (batch {r['batch']}), "
                  f"{r['workers']} workers on {r['cores']} cores", ""]
    for name, title in (("tta", "a 3D CNN"), ("vit", "a video ViT")):
        if name in result and (out / name / "tta.md").exists():
            table = (out / name / "tta.md").read_text()
            lines += [f"## Time to accuracy, {title} (mgvideo bench tta)", "", table, ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("syncs")
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=syncs)
    p = sub.add_parser("loader")
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--workers", type=int, default=0, help="0: the trainer's default for this machine")
    p.add_argument("--clips", type=int, default=256)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=loader)
    p = sub.add_parser("prepare")
    p.add_argument("config")
    p.set_defaults(func=prepare)
    p = sub.add_parser("report")
    p.add_argument("outdir")
    p.set_defaults(func=report)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
