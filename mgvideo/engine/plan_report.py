"""What `mgvideo plan` prints: the schedule table (one forward pass per slot, passes per step, BN groups),
the summary of savings, the shape and device lines, the /dev/shm a node needs, and the --json object.

The command (mgvideo/commands/plan.py) reads the flags or the recipe into a `PlanInputs`; this module only
turns one into rows and lines. It lives here, not beside the command, because every module in
mgvideo/commands/ is a subcommand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from mgvideo.config import Config
from mgvideo.engine.device import DevicePlan
from mgvideo.engine.step import bn_plan
from mgvideo.multigrid import LRConfig, MultigridSchedule, lr_at, run_length, stage_iterations
from mgvideo.multigrid.lr import policy_lr, warmup_epochs
from mgvideo.multigrid.schedule import Stage


@dataclass(frozen=True)
class LoaderNumbers:
    """What turns epochs into iterations and steps into forward passes: clips per epoch, base per-device
    batch per step, devices, BN group size (0: a model without BN), and the passes each device splits a
    step into."""

    dataset_size: int
    batch_size: int
    devices: int
    bn_base_size: int
    passes: int = 1  # `DevicePlan.micro_batches`: pass i of a step holds every k-th clip from i


@dataclass(frozen=True)
class PlanInputs:
    """What a plan is made of, built once from the config as `mgvideo train` builds it."""

    schedule: MultigridSchedule
    lr_cfg: LRConfig
    loader: LoaderNumbers
    devices: DevicePlan
    dataset_source: str | None  # where the clip count came from (None: --dataset-size, or Kinetics')


def clean(value: float) -> float:
    """A float without binary noise (0.08000000000000002 -> 0.08): six significant digits."""
    return float(f"{value:.6g}")


# -- the table ----------------------------------------------------------------------------------------
def bn_groups(stage_batch: int, bn_base_size: int, devices: int, passes: int = 1) -> str:
    """BN layout of one forward pass of a stage whose per-device long-cycle batch is `stage_batch`, split
    into `passes` per step: the plan the trainer applies (`bn_plan`); "none" for a model without BN
    (`bn_base_size` 0)."""
    if bn_base_size == 0:
        return "none"
    plan = bn_plan(stage_batch, stage_batch, bn_base_size, devices, passes)
    if plan.sync_size > 1:
        return f"sync×{plan.sync_size}"
    return f"sub×{plan.groups}" if plan.groups > 1 else "BN"


def stage_lrs(schedule: MultigridSchedule, lr_cfg: LRConfig, stage: Stage) -> str:
    """The LR over a stage (after warmup): one value, or the values it steps or anneals through."""
    if schedule.cfg.lr_policy == "cosine":
        epochs = [stage.start_epoch, max(stage.end_epoch - 1, stage.start_epoch)]
    else:
        epochs = [stage.start_epoch] + [s for s in schedule.steps if stage.start_epoch < s < stage.end_epoch]
    values = [policy_lr(e, schedule, lr_cfg) for e in epochs]
    values = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    return "→".join(f"{v:.3g}" for v in values)


def epoch_iterations(stage: Stage, loader: LoaderNumbers) -> int:
    """Iterations per epoch of a stage on each device (multigrid/iterations.py)."""
    return stage_iterations(stage, loader.dataset_size, loader.batch_size, loader.devices)


def pass_slots(stage: Stage, loader: LoaderNumbers) -> list[list[int]]:
    """[clips, T, S] of one forward pass of each short-cycle slot: the step's batch on a device split into
    `loader.passes` passes, as `train_step` splits it."""
    return [[loader.batch_size * s.batch_factor // loader.passes, s.frames, s.crop] for s in stage.slots]


def stage_rows(schedule: MultigridSchedule, lr_cfg: LRConfig, loader: LoaderNumbers) -> list[dict]:
    """The table's rows as data (what --json holds per stage): `slots` are a device's clips per step,
    `slots_per_pass` what one forward pass holds, and `bn_groups` the BN layout of a pass."""
    rows = []
    for stage in schedule.stages:
        rows.append({
            "stage": stage.index, "finetune": stage.finetune, "lr_step": stage.lr_step,
            "start_epoch": stage.start_epoch, "end_epoch": stage.end_epoch,
            "batch_factor": stage.batch_factor, "frames": stage.frames, "crop": stage.crop,
            "slots": [[loader.batch_size * s.batch_factor, s.frames, s.crop] for s in stage.slots],
            "slots_per_pass": pass_slots(stage, loader), "passes_per_step": loader.passes,
            "bn_groups": bn_groups(loader.batch_size * stage.batch_factor, loader.bn_base_size,
                                   loader.devices, loader.passes),
            "lr": stage_lrs(schedule, lr_cfg, stage),
            "iterations_per_epoch": epoch_iterations(stage, loader)})
    return rows


def schedule_table(schedule: MultigridSchedule, lr_cfg: LRConfig, loader: LoaderNumbers) -> str:
    """One row per stage: LR step, epochs, the (B,T,S) of one forward pass per short-cycle slot, passes per
    step, BN groups of a pass, LR and iterations per epoch."""
    header = ("stage", "LR step", "epochs", "per-pass (B,T,S) per slot", "passes/step", "BN groups", "LR",
              "it/epoch")
    rows = [header]
    for row in stage_rows(schedule, lr_cfg, loader):
        name = f"{row['stage']}" + (" (FT)" if row["finetune"] else "")
        slots = " ".join(f"({b},{t},{s})" for b, t, s in row["slots_per_pass"])
        rows.append((name, str(row["lr_step"]), f"{row['start_epoch']}-{row['end_epoch']}", slots,
                     str(row["passes_per_step"]), row["bn_groups"], row["lr"],
                     str(row["iterations_per_epoch"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


# -- the figures and the summary ----------------------------------------------------------------------
def plan_figures(schedule: MultigridSchedule, lr_cfg: LRConfig, loader: LoaderNumbers,
                 per_clip: Callable[[int, int], float], basis: str) -> dict:
    """Iterations, the iteration saving, the FLOP ratio and the expected speed-up in training time against
    the baseline (the same recipe without multigrid, on the same data and devices), with `per_clip(T, S)`
    the seconds a clip takes and `basis` the sentence saying where that came from."""
    cfg = schedule.cfg
    length = run_length(schedule, loader.dataset_size, loader.batch_size, loader.devices)
    baseline, iters = length.baseline, length.total
    seconds = predicted_seconds(schedule, loader, per_clip)
    baseline_seconds = baseline * loader.batch_size * per_clip(cfg.frames, cfg.crop)
    return {"epochs": schedule.max_epoch, "baseline_epochs": cfg.max_epoch, "iterations": iters,
            "baseline_iterations": baseline, "iteration_saving": clean(baseline / iters),
            "flop_ratio": clean(schedule.flop_ratio()), "time_speedup": clean(baseline_seconds / seconds),
            "time_speedup_basis": basis, "reference_epoch_compression": clean(schedule.iteration_saving),
            "warmup_epochs": clean(warmup_epochs(schedule, lr_cfg))}


def predicted_seconds(schedule: MultigridSchedule, loader: LoaderNumbers,
                      per_clip: Callable[[int, int], float]) -> float:
    """Training time of the schedule with `per_clip(T, S)` seconds per clip on each device."""
    # An iteration of slot j trains batch_j clips; the sampler cycles the slots in turn.
    return sum(st.epochs * epoch_iterations(st, loader) * sum(
        loader.batch_size * s.batch_factor * per_clip(s.frames, s.crop) for s in st.slots) / len(st.slots)
        for st in schedule.stages)


def summary(schedule: MultigridSchedule, lr_cfg: LRConfig, loader: LoaderNumbers, figures: dict) -> str:
    """Savings against the baseline recipe (same inputs, no multigrid)."""
    f, warmup = figures, figures["warmup_epochs"]
    stretch = (f": multigrid trains epoch_factor {schedule.cfg.epoch_factor:g}x the epochs, rounded to "
               "whole stages, each far cheaper" if f["epochs"] != f["baseline_epochs"] else "")
    return "\n".join([
        f"epochs: {f['epochs']} (baseline {f['baseline_epochs']}{stretch}); LR steps {list(schedule.steps)}",
        f"warmup: {lr_cfg.warmup_start_lr:g} -> {lr_at(warmup, schedule, lr_cfg):.3g} over {warmup:g} epochs"
        if warmup else "warmup: none",
        f"iteration saving: {f['iteration_saving']:.3g}x ({f['iterations']} iterations against the "
        f"baseline's {f['baseline_iterations']} on {loader.dataset_size} clips)",
        f"FLOPs vs baseline: {f['flop_ratio']:.3f} (assumes cost per clip ∝ T·S², every clip seen "
        "once per epoch, a slot's share of clips = its share of the cycle's batch)",
        f"expected speed-up in training time: {f['time_speedup']:.3g}x, {f['time_speedup_basis']}",
        f"(the reference's epoch compression before fine-tuning, PySlowFast's 'iteration saving': "
        f"{f['reference_epoch_compression']:.4g})",
    ])


def counted_flop_ratio(cfg: Config, schedule: MultigridSchedule) -> float | None:
    """For a ViT recipe, the FLOP ratio with each shape's cost counted on the model (attention is
    quadratic in tokens, so T·S² overstates coarse shapes); None for other models."""
    from mgvideo.models.zoo import PRESETS

    if PRESETS[cfg.model.name].family != "vit":
        return None
    from mgvideo.models.flops import clip_cost_fn

    cost = clip_cost_fn(cfg.model.name, cfg.data.num_classes, **cfg.model.options)
    return clean(schedule.flop_ratio(cost))


# -- the devices, the shapes and /dev/shm -------------------------------------------------------------
def device_summary(cfg: Config, plan: DevicePlan, recipe: bool) -> dict:
    """What the devices mean for the run: per-device batch, passes per step, global batch, LR, and the line
    the table prints (for a --config `recipe`, with why a step takes the passes it does)."""
    base_lr = cfg.solver.base_lr
    line = plan.describe(base_lr) if recipe else (
        f"devices: {plan.devices}; {plan.passes()}; global batch {plan.global_batch}; base LR {base_lr:g}")
    return {"devices": plan.devices, "per_device_batch": plan.batch, "micro_batches": plan.micro_batches,
            "global_batch": plan.global_batch, "base_lr": clean(base_lr * plan.lr_scale), "line": line}


# Why a model family rounds shapes to a multiple (zoo.shape_multiple).
MULTIPLE_REASONS = {"slowfast": "its slow pathway takes one frame in {t}",
                    "vit": "its tubelet of {t} frames and patch of {s} pixels"}


def shape_multiple_note(cfg: Config, model_named: bool) -> dict:
    """The (frames, crop) multiple the schedule's shapes are rounded to, and why: none where no model is
    named (flags without --model: the schedule alone, as PySlowFast rounds it); else
    `multigrid.shape_multiple` or the model's."""
    from mgvideo.engine.builders import run_shape_multiple
    from mgvideo.models.zoo import get_preset

    t, s = run_shape_multiple(cfg)
    if not model_named:
        source = "no model: the flags describe the schedule alone; --model NAME applies a model's multiple"
    elif cfg.multigrid.shape_multiple:
        source = "multigrid.shape_multiple"
    else:
        reason = MULTIPLE_REASONS.get(get_preset(cfg.model.name).family, "which needs none")
        source = f"model {cfg.model.name}, {reason.format(t=t, s=s)}"
    return {"frames": t, "crop": s, "source": source}


def shape_line(note: dict) -> str:
    """The table's line on how shapes are rounded (PySlowFast: whole frames and pixels)."""
    if (note["frames"], note["crop"]) == (1, 1):
        return f"shapes: whole frames and pixels, as PySlowFast rounds them ({note['source']})"
    return (f"shapes: frames rounded to multiples of {note['frames']} and crops of {note['crop']} "
            f"({note['source']}); PySlowFast rounds to whole frames and pixels")


def shm_lines(cfg: Config, schedule: MultigridSchedule, loader: LoaderNumbers) -> list[str]:
    """The /dev/shm one node's loaders need, per count of ranks on the node (data/loader.py)."""
    from mgvideo.data.loader import largest_batch_bytes, shm_need_lines

    shapes = [(size, shape.frames, shape.crop) for stage in schedule.stages
              for size, shape in schedule.shapes(stage, loader.batch_size)]
    ranks = sorted({n for n in (1, 2, 4, 8) if n <= loader.devices} | {min(loader.devices, 8)})
    return shm_need_lines(largest_batch_bytes(shapes), cfg.data.workers, ranks=ranks,
                          videos=loader.dataset_size)


# -- the whole output ---------------------------------------------------------------------------------
def plan_json(p: PlanInputs, figures: dict, devices: dict, shapes: dict, counted: float | None) -> dict:
    """What --json prints: the rows, the rewritten solver, the figures, the shape multiple and devices."""
    schedule = p.schedule
    return {"stages": stage_rows(schedule, p.lr_cfg, p.loader), "steps": list(schedule.steps),
            "lrs": [clean(x) for x in schedule.lrs], "max_epoch": schedule.max_epoch,
            "dataset_size": p.loader.dataset_size, **figures, "flop_ratio_counted": counted,
            "shape_multiple": shapes, "devices": {k: v for k, v in devices.items() if k != "line"}}


def print_plan(cfg: Config, p: PlanInputs, figures: dict, devices: dict, shapes: dict,
               counted: float | None) -> None:
    """The table, the summary and the lines on shapes, devices, /dev/shm and counted FLOPs."""
    print(schedule_table(p.schedule, p.lr_cfg, p.loader))
    print()
    if p.dataset_source:
        print(f"dataset: {p.loader.dataset_size} clips, {p.dataset_source}")
    print(summary(p.schedule, p.lr_cfg, p.loader, figures))
    print(shape_line(shapes))
    print(devices["line"])
    sized = ("as data.workers says" if cfg.data.workers >= 0
             else f"sized for this machine's {os.cpu_count()} cores")
    print(f"/dev/shm a node needs for its loaders, by the ranks it holds (each with the per-device batch "
          f"above; workers {sized}, data.workers=N plans another):")
    print("\n".join("  " + line for line in shm_lines(cfg, p.schedule, p.loader)))
    if counted is not None:
        print(f"FLOPs vs baseline counted on {cfg.model.name} (attention's quadratic cost "
              f"in tokens included): {counted:.3f}")
