"""`mgvideo plan --profile`: the FLOP rule's batches and the measured rule's side by side, stage by stage,
with each rule's predicted step time and training time from the profile's per-clip times."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mgvideo.config import Config, override
from mgvideo.engine.plan_report import PlanInputs, clean, predicted_seconds
from mgvideo.multigrid import MultigridSchedule


def rule_schedules(cfg: Config, schedule: MultigridSchedule, profile: Path) -> dict[str, MultigridSchedule]:
    """The plan's schedule under its own rule, and the same recipe under the other (measured: `profile`)."""
    from mgvideo.engine.builders import build_schedule

    if cfg.multigrid.batch_rule == "measured":
        flops = override(cfg, **{"multigrid.batch_rule": "flops", "multigrid.cost_table": ""})
        return {"flops": build_schedule(flops), "measured": schedule}
    measured = override(cfg, **{"multigrid.batch_rule": "measured", "multigrid.cost_table": str(profile)})
    return {"flops": schedule, "measured": build_schedule(measured)}


def compare(cfg: Config, p: PlanInputs, profile: Path, per_clip: Callable[[int, int], float]) -> dict:
    """Per rule: each stage's per-device batch per slot, its mean predicted ms per step, the run's
    predicted seconds and the spread of step times (slowest over fastest step)."""
    base = p.loader.batch_size
    out = {}
    for rule, schedule in rule_schedules(cfg, p.schedule, profile).items():
        stages = []
        for st in schedule.stages:
            ms = [1e3 * base * s.batch_factor * per_clip(s.frames, s.crop) for s in st.slots]
            stages.append({"stage": st.index, "frames": st.frames, "crop": st.crop, "epochs": st.epochs,
                           "slots": [[base * s.batch_factor, s.frames, s.crop] for s in st.slots],
                           "step_ms": clean(sum(ms) / len(ms)), "ms": ms})
        steps = [m for s in stages if s["epochs"] for m in s.pop("ms")]
        for s in stages:
            s.pop("ms", None)
        out[rule] = {"stages": stages, "seconds": clean(predicted_seconds(schedule, p.loader, per_clip)),
                     "step_spread": clean(max(steps) / min(steps))}
    return out


def rules_lines(rules: dict, profile: Path) -> list[str]:
    """The side-by-side table and the two predicted training times."""
    rows = [("stage", "T x S", "FLOP rule: batches per slot", "ms/step", "measured rule: batches", "ms/step")]
    for f, m in zip(rules["flops"]["stages"], rules["measured"]["stages"]):
        batches = [" ".join(str(b) for b, _, _ in r["slots"]) for r in (f, m)]
        rows.append((str(f["stage"]), f"{f['frames']}x{f['crop']}", batches[0], f"{f['step_ms']:.4g}",
                     batches[1], f"{m['step_ms']:.4g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    f, m = rules["flops"], rules["measured"]
    return [f"batch rules, per device, with the per-clip times in {profile}:", *table,
            f"predicted training time: FLOP rule {f['seconds']:.4g} s (slowest step / fastest "
            f"{f['step_spread']:.3g}), measured rule {m['seconds']:.4g} s ({m['step_spread']:.3g}); "
            "multigrid.batch_rule=measured multigrid.cost_table=FILE trains the measured rule"]
