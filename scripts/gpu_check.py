"""Helpers of scripts/gpu_check.sh: the sync check, the compile measurement, the loader measurement and
the report.

    python scripts/gpu_check.py syncs --out OUT.jsonl [--amp bf16,fp16] CONFIG [key=value ...]
    python scripts/gpu_check.py compile MODEL --config CONFIG --out OUT.jsonl [--shapes N] [--backend B]
    python scripts/gpu_check.py loader CONFIG OUT.json [--workers N] [--clips K] [key=value ...]
    python scripts/gpu_check.py report OUTDIR

Each measuring helper appends one JSON line per row (an AMP dtype, a shape) as soon as it is measured.
`report` reads whatever rows the parts have written in OUTDIR (syncs.jsonl, profile*.jsonl, compile.jsonl,
shapes/metrics.jsonl, loader.json, tta.json or else each run's metrics.jsonl) and writes gpu_check.md and
gpu_check.json; the shell script calls it after every part, so a part stopped at its limit still counts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from pathlib import Path

from mgvideo.engine.records import EvalRecord, Record, TrainRecord, read_records


def syncs(args: argparse.Namespace) -> None:
    """Train a few steps with host syncs forbidden, once per AMP dtype in `--amp`: CUDA's sync debug mode on
    a GPU, and on the CPU the Tensor methods that read a value. Appends, per dtype, which steps ran and the
    first sync met, if any."""
    failed = False
    for amp in args.amp.split(","):
        result = {"amp": amp, **_sync_steps(args, amp)}
        _append(args.out, result)
        print(f"syncs: {result}")
        failed = failed or bool(result["sync"])
    if failed:
        sys.exit(1)


def _sync_steps(args: argparse.Namespace, amp: str) -> dict:
    import tempfile

    from mgvideo.config import load_config
    from mgvideo.engine.run import build_run
    from mgvideo.engine.trainer import close_window, train_step

    run = build_run(load_config(args.config, [*args.overrides, f"train.amp={amp}"]), Path(tempfile.mkdtemp()))
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
    return result


def _append(path: str | Path, row: dict) -> None:
    """One JSON line, written and flushed at once: a part stopped later keeps it."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    """The complete JSON lines of `path` (a line cut by a kill is left out)."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def compile_shapes(args: argparse.Namespace) -> None:
    """`torch.compile` as train.compile uses it (no dynamic shapes, the training autocast, channels-last and
    BN groups) on the first `--shapes` shapes of the schedule (the full one first): per shape, the seconds
    its first compiled forward+backward takes (compilation) and ms/iteration compiled against eager."""
    import time

    import torch

    from mgvideo.commands.profile import schedule_shapes, time_shape
    from mgvideo.engine.step import backward, precision, step_plan
    from mgvideo.models.zoo import build_model
    from mgvideo.multigrid.batchnorm import convert_model, set_bn_groups

    device = torch.device(args.device)
    amp = torch.bfloat16
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * args.shapes)
    net = convert_model(build_model(args.model, args.num_classes), 8).to(device).train()
    net = net.to(memory_format=torch.channels_last_3d)
    compiled = torch.compile(net, dynamic=False, backend=args.backend)
    shapes = schedule_shapes(args.model, args.config, args.batch_size)
    for b, t, s, stage_batch in [shapes[-1], *shapes[:-1]][: args.shapes]:
        set_bn_groups(net, step_plan(b, stage_batch, 8))
        eager = time_shape(net, b, t, s, args.iters, device, True, amp)
        x = torch.randn(b, 3, t, s, s, device=device).contiguous(memory_format=torch.channels_last_3d)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with precision(device, amp):
            loss = compiled(x).float().sum()
        backward(loss, device, amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        first = time.perf_counter() - start
        fast = time_shape(compiled, b, t, s, args.iters, device, True, amp)
        row = {"batch": b, "frames": t, "crop": s, "backend": args.backend, "compile_s": round(first, 2),
               "eager_ms": round(1000 * eager["sec_per_iter"], 1),
               "compiled_ms": round(1000 * fast["sec_per_iter"], 1)}
        row["speedup"] = round(row["eager_ms"] / max(row["compiled_ms"], 1e-6), 2)
        _append(args.out, row)
        print(f"compile: {row}", flush=True)


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
    from mgvideo.engine.device import per_device_batch

    cfg = load_config(args.config, args.overrides)
    ensure_synthetic_data(cfg)
    batch = per_device_batch(cfg, 1)
    size, shape = distinct_shapes(builders.build_schedule(cfg), batch)[0]
    annotations = builders.read_split(cfg, cfg.data.train_list)
    workers = args.workers or resolve_workers(-1)
    rate = loader_rate(annotations, shape, size, workers, resize=True, clips=args.clips)
    row = {"frames": shape.frames, "crop": shape.crop, "batch": size, "workers": workers,
           "cores": os.cpu_count(), "clips": args.clips, "clips_per_s": round(rate, 1)}
    Path(args.out).write_text(json.dumps(row, indent=2))
    print(f"loader at the coarsest shape {shape.frames}x{shape.crop} (batch {size}), {workers} workers: "
          f"{rate:.1f} clips/s")


def shape_rows(records: list[Record]) -> list[dict]:
    """Per (T, S) of a training run: median ms/iteration and data wait, and the ratio to the full shape
    (the last shape trained). The first record of a shape is left out when there are others (cuDNN picks
    its kernels there)."""
    its = [r for r in records if isinstance(r, TrainRecord)]
    by_shape: dict[tuple[int, int], list[TrainRecord]] = {}
    for r in its:
        by_shape.setdefault((r.frames, r.crop), []).append(r)
    rows = []
    for (frames, crop), group in by_shape.items():
        kept = group[1:] or group
        rows.append({"frames": frames, "crop": crop, "batch": kept[-1].clips_per_iteration,
                     "iterations": sum(r.iterations for r in group),
                     "ms_per_iter": round(statistics.median(r.ms_per_iteration for r in kept), 1),
                     "data_wait": round(statistics.median(r.data_wait for r in kept), 3)})
    if rows:
        full = next(r for r in rows if (r["frames"], r["crop"]) == (its[-1].frames, its[-1].crop))
        for row in rows:
            row["vs_full"] = round(row["ms_per_iter"] / full["ms_per_iter"], 2)
    return rows


def prepare(args: argparse.Namespace) -> None:
    """Generate a config's synthetic set (if absent) ahead of the part that trains on it."""
    from mgvideo.config import load_config
    from mgvideo.data.prepare import ensure_synthetic_data

    ensure_synthetic_data(load_config(args.config))


def report(args: argparse.Namespace) -> None:
    """Collect the rows the parts have written into gpu_check.json and a markdown table gpu_check.md."""
    out = Path(args.outdir)
    result: dict = {}
    if (out / "env.json").exists():
        result["env"] = json.loads((out / "env.json").read_text())
    if parts := _read_jsonl(out / "parts.jsonl"):
        result["parts"] = parts
    for name in ("syncs", "profile", "profile_cf", "compile"):
        if rows := _read_jsonl(out / f"{name}.jsonl"):
            result[name] = rows
    if (log := out / "shapes" / "metrics.jsonl").exists() and (records := read_records(log)):
        result["train_shapes"] = shape_rows(records)
    if (out / "loader.json").exists():
        result["loader"] = json.loads((out / "loader.json").read_text())
    for name in ("tta", "vit"):  # the CNN's and the ViT's time to accuracy
        if (out / f"{name}.json").exists():
            tta = json.loads((out / f"{name}.json").read_text())
            result[name] = {k: tta.get(k) for k in ("speedup", "final_top1_delta", "target_top1", "variants",
                                                    "bench_minutes")}
        elif runs := partial_runs(out / name):  # stopped before its summary: each run's own log
            result[name] = {"partial": True, "runs": runs, "variants": [r["variant"] for r in runs]}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_check.md").write_text(markdown(result, out))
    print(f"gpu_check: wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'} ({', '.join(result)})")


def partial_runs(folder: Path) -> list[dict]:
    """Per run folder of a bench stopped early (OUT/seed<k>/<variant>/metrics.jsonl): iterations trained,
    training seconds and the evaluations reached so far."""
    runs = []
    for log in sorted(folder.glob("seed*/*/metrics.jsonl")):
        records = read_records(log)
        trained = [r for r in records if isinstance(r, TrainRecord)]
        evals = [r for r in records if isinstance(r, EvalRecord)]
        if not trained:
            continue
        runs.append({"variant": log.parent.name, "seed": log.parent.parent.name,
                     "iterations": trained[-1].step, "train_s": trained[-1].time,
                     "evals": [{"step": e.step, "time": e.time, "top1": e.top1} for e in evals],
                     "finished": (log.parent / "summary.json").exists()})
    return runs


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


def _verdict(status: int) -> str:
    """A part's exit status in words: timeout sends SIGINT (130 or 124), then SIGKILL (137)."""
    return "ok" if status == 0 else "stopped at its limit" if status in (124, 130, 137) else "failed"


def markdown(result: dict, out: Path) -> str:
    """The report's tables, one section per finished part."""
    lines = ["# gpu_check", ""]
    if "env" in result:
        lines += [", ".join(f"{k}: {v}" for k, v in result["env"].items()), ""]
    if "parts" in result:
        lines += ["| part | status | seconds | limit |", "|---" * 4 + "|"]
        lines += [f"| {r['part']} | {_verdict(r['status'])} ({r['status']}) | {r['seconds']} | {r['limit']} |"
                  for r in result["parts"]]
        lines.append("")
    for r in result.get("syncs", []):
        verdict = f"one in step {r['steps'] + 1}: {r['sync']}" if r["sync"] else f"none in {r['steps']} steps"
        lines += [f"Host syncs between log points ({r['device']}, {r['amp']}): {verdict}", ""]
    if "profile" in result:
        lines += profile_table(result["profile"], result.get("profile_cf"))
    if "compile" in result:
        lines += ["## torch.compile per shape (forward + backward, bf16, channels-last)", "",
                  "| batch | T | S | compile s | eager ms/iter | compiled ms/iter | speed-up |",
                  "|---" * 7 + "|"]
        lines += [f"| {r['batch']} | {r['frames']} | {r['crop']} | {r['compile_s']} | {r['eager_ms']} | "
                  f"{r['compiled_ms']} | {r['speedup']} |" for r in result["compile"]]
        lines.append("")
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
        elif result.get(name, {}).get("partial"):
            lines += [f"## Time to accuracy, {title} (stopped early: each run's metrics.jsonl)", "",
                      "| run | finished | iterations | training s | evaluations (top-1) |", "|---" * 5 + "|"]
            for r in result[name]["runs"]:
                top1 = ", ".join(str(e["top1"]) for e in r["evals"])
                lines.append(f"| {r['seed']} {r['variant']} | {r['finished']} | {r['iterations']} | "
                             f"{r['train_s']} | {top1} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("syncs")  # options first: the config's overrides follow it
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--amp", default="bf16", help="comma-separated train.amp values, checked in turn")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=syncs)
    p = sub.add_parser("compile")
    p.add_argument("model")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shapes", type=int, default=3)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", default="inductor")
    p.set_defaults(func=compile_shapes)
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
