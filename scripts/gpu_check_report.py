"""gpu_check's report: the rows its parts have written in OUTDIR (syncs.jsonl, profile*.jsonl, compile.jsonl,
shapes/metrics.jsonl, loader.json, tta.json or else each run's metrics.jsonl), gathered into gpu_check.json
and gpu_check.md, with each part's status and whether its headline figure came back.

`scripts/gpu_check.py report OUTDIR [--final]` runs it with the plan's parts; the shell script calls that
after every part, so a part stopped at its limit still counts. A part's `reached` check (`rows_in`,
`compiled`, `arms_evaluated`) reads the dict `collect` returns.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from mgvideo.engine.records import EvalRecord, Record, TrainRecord, read_records

Check = Callable[[dict], bool]  # whether a report (gpu_check.json's dict) holds a part's headline figure


def rows_in(key: str) -> Check:
    """A headline that is a part's first row under `key` of the report."""
    return lambda result: bool(result.get(key))


def compiled(result: dict) -> bool:
    """The compile part's headline: a shape's compile seconds (its eager row alone is not)."""
    return any(r.get("compile_s") is not None for r in result.get("compile", []))


def arms_evaluated(key: str) -> Check:
    """A bench's headline: its summary, or else both arms (baseline and multigrid) each evaluated once."""
    def reached(result: dict) -> bool:
        bench = result.get(key) or {}
        if not bench.get("partial"):
            return len(bench.get("variants") or ()) >= 2
        return len(bench["runs"]) >= 2 and all(run["evals"] for run in bench["runs"])
    return reached


def _read_jsonl(path: Path) -> list[dict]:
    """The complete JSON lines of `path` (a line cut by a kill is left out)."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


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


def collect(out: Path, checks: Mapping[str, Check]) -> dict:
    """Every row the parts have written in `out`, and per part run its status and whether its headline
    figure is in (`reached`, by the part's check in `checks`)."""
    result: dict = {}
    if (out / "env.json").exists():
        result["env"] = json.loads((out / "env.json").read_text())
    for name in ("syncs", "profile", "profile_cf"):
        if rows := _read_jsonl(out / f"{name}.jsonl"):
            result[name] = rows
    if rows := _read_jsonl(out / "compile.jsonl"):  # a shape's last row: compiled, or still compiling
        result["compile"] = list({(r["batch"], r["frames"], r["crop"]): r for r in rows}.values())
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
    if parts := _read_jsonl(out / "parts.jsonl"):
        result["parts"] = [{**r, "reached": r["status"] is not None and checks[r["part"]](result)}
                           for r in parts]
    return result


def write_report(out: Path, checks: Mapping[str, Check], headlines: Mapping[str, str], final: bool) -> int:
    """Collect the rows the parts have written in `out` into gpu_check.json and a markdown table
    gpu_check.md (`checks` and `headlines` by part name). With `final`, say which parts failed or missed
    their headline (returns 1) and which were skipped."""
    result = collect(out, checks)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_check.md").write_text(markdown(result, out, headlines))
    print(f"gpu_check: wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'} ({', '.join(result)})")
    if not final:
        return 0
    parts = result.get("parts", [])
    skipped = [r["part"] for r in parts if r["status"] is None]
    failed = [r["part"] for r in parts if r["status"] is not None and not (
        r["reached"] and r["status"] in (0, 124, 130, 137))]  # stopped at its limit with its headline: fine
    if skipped:
        print(f"gpu_check: skipped (no time or no data left for them): {' '.join(skipped)}", file=sys.stderr)
    if failed:
        print(f"gpu_check: failed, or stopped before their headline: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


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


def _verdict(part: dict) -> str:
    """A part's end in words: timeout sends SIGINT (124, or 130), then SIGKILL (137); no status: skipped."""
    status = part["status"]
    if status is None:
        return f"skipped: {part.get('skipped', '')}"
    ended = "ok" if status == 0 else "stopped at its limit" if status in (124, 130, 137) else "failed"
    return f"{ended} ({status})"


def markdown(result: dict, out: Path, headlines: Mapping[str, str]) -> str:
    """The report's tables, one section per finished part (`headlines`: each part's figure, by name)."""
    lines = ["# gpu_check", ""]
    if "env" in result:
        lines += [", ".join(f"{k}: {v}" for k, v in result["env"].items()), ""]
    if "parts" in result:
        lines += ["| part | status | started at s | seconds | limit | headline figure | in |",
                  "|---" * 7 + "|"]
        lines += [f"| {r['part']} | {_verdict(r)} | {r.get('start', '')} | {r['seconds']} | {r['limit']} | "
                  f"{headlines[r['part']]} | {'yes' if r['reached'] else 'no'} |" for r in result["parts"]]
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
        lines += [f"| {r['batch']} | {r['frames']} | {r['crop']} | {r['compile_s'] or 'over the limit'} | "
                  f"{r['eager_ms']} | {r.get('compiled_ms', '-')} | {r.get('speedup', '-')} |"
                  for r in result["compile"]]
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
