"""`mgvideo plan`: print (or plot, or dump as JSON) a multigrid schedule and what it saves.

One front end: a config (the --config recipe with key=value overrides, or the default recipe with the
schedule flags as shorthands for its keys), read once and built as `mgvideo train` builds it. Flags alone
plan the schedule they describe, PySlowFast's to the epoch: no model's shape multiple unless --model names
one. The table, summary, JSON and plot functions take the `PlanInputs` it gives.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgvideo.bench.bench_config import load_any_config
from mgvideo.config import Config, load_config, override, resolve_recipe
from mgvideo.engine.step import step_plan
from mgvideo.errors import ConfigError, MgvideoError, ScheduleError
from mgvideo.multigrid import LRConfig, MultigridSchedule, iterations_per_epoch, lr_at
from mgvideo.multigrid.fit import check_dataset_fits
from mgvideo.multigrid.lr import check_warmup_of, policy_lr, warmup_epochs
from mgvideo.multigrid.schedule import Stage

if TYPE_CHECKING:
    from mgvideo.engine.device import DevicePlan

# Kinetics-400 training clips as used by PySlowFast runs: 240436 / 64 gives the 3756 iterations per
# epoch logged in SlowFast issue #277 (the full K400 list has 246535; downloads miss some).
K400_TRAIN_SIZE = 240436


@dataclass(frozen=True)
class LoaderNumbers:
    """What turns epochs into iterations and steps into forward passes: clips per epoch, base per-device
    batch per step, devices, BN group size, and the passes each device splits a step into."""

    dataset_size: int = K400_TRAIN_SIZE
    batch_size: int = 8
    devices: int = 8
    bn_base_size: int = 8
    passes: int = 1  # `DevicePlan.micro_batches`: pass i of a step holds every k-th clip from i


@dataclass(frozen=True)
class PlanInputs:
    """What a plan is made of, built once from the config as `mgvideo train` builds it."""

    schedule: MultigridSchedule
    lr_cfg: LRConfig
    loader: LoaderNumbers
    devices: DevicePlan
    dataset_source: str | None  # where the clip count came from (None: --dataset-size, or Kinetics')


# -- flag parsing -------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _float_list(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def _pairs(text: str) -> tuple[tuple[float, float], ...]:
    pairs = tuple(_float_list(p) for p in text.split(";"))
    if any(len(p) != 2 for p in pairs):
        raise ValueError
    return pairs


_int_list.__name__ = "comma-separated integers"
_float_list.__name__ = "comma-separated numbers"
_pairs.__name__ = "';'-separated t,s pairs"
_positive_int.__name__ = "positive integer"

# Without --config, `plan` plans this recipe (PySlowFast's SLOWFAST_8x8_R50_stepwise_multigrid) on 8
# devices, with the schedule flags below as shorthands for the config keys they set.
DEFAULT_RECIPE = "kinetics/slowfast_r50_8x8_multigrid"
FLAG_DEVICES = 8
# Each schedule flag and the config key it sets. --batch-size is per device: solver.batch_size is that
# times --devices. Beside --config a schedule flag is an error: the recipe sets that key.
FLAG_KEYS = {
    "frames": "data.frames", "crop": "data.crop", "sampling_rate": "data.sampling_rate",
    "steps": "solver.steps", "max_epoch": "solver.max_epoch", "gamma": "solver.gamma",
    "epoch_factor": "multigrid.epoch_factor", "long_cycle_factors": "multigrid.long_cycle_factors",
    "short_cycle_factors": "multigrid.short_cycle_factors", "long_cycle": "multigrid.long_cycle",
    "short_cycle": "multigrid.short_cycle", "short_cycle_relative": "multigrid.short_cycle_relative",
    "lr_policy": "solver.lr_policy", "base_lr": "solver.base_lr", "warmup_epochs": "solver.warmup_epochs",
    "warmup_start_lr": "solver.warmup_start_lr", "rescale_warmup": "solver.rescale_warmup",
    "batch_size": "solver.batch_size", "bn_base_size": "model.bn_base_size", "model": "model.name",
}
# What a schedule error calls the model's shape multiple, written as the flag that brings it in.
MULTIPLE_WORDS = ("multigrid.shape_multiple", "shape_multiple")


def _flag(field: str) -> str:
    return "--" + ("no-" if field in ("long_cycle", "short_cycle") else "") + field.replace("_", "-")


def refuse_ignored_flags(args: argparse.Namespace) -> None:
    """With --config the recipe decides the schedule: a schedule flag beside it is an error, not dropped."""
    for name, key in FLAG_KEYS.items():
        if getattr(args, name) is not None:
            raise ConfigError(f"{_flag(name)}: not used with --config (the recipe sets {key}); "
                              f"give it as an override instead, e.g. {key}=...")


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the schedule flags set on the default recipe (the devices and batch always).

    Flags describe a schedule, not the recipe's model: without --model its shapes are PySlowFast's, whole
    frames and pixels, not SlowFast's frame multiple. The recipe's 34-epoch warmup belongs to its 239-epoch
    run; flags that set another run length get none (PySlowFast's default) unless --warmup-epochs says.
    """
    dotted = {key: getattr(args, name) for name, key in FLAG_KEYS.items() if getattr(args, name) is not None}
    if args.lr_policy == "cosine" and args.steps is None:
        dotted["solver.steps"] = []  # cosine without steps: the schedule cuts equal slices
    if args.model is None:
        dotted["multigrid.shape_multiple"] = [1, 1]
    if args.warmup_epochs is None and (args.steps is not None or args.max_epoch is not None):
        dotted["solver.warmup_epochs"] = 0.0
    devices = args.devices or FLAG_DEVICES
    dotted["solver.batch_size"] = (args.batch_size or 8) * devices
    dotted["solver.recipe_devices"] = devices
    return dotted


def name_flags(err: MgvideoError) -> MgvideoError:
    """The error with each config key it names written as the flag that sets it (plans without --config)."""
    text = str(err).removeprefix("override: ")
    for name, key in FLAG_KEYS.items():
        text = re.sub(rf"(?<![\w.]){re.escape(key)}(?!\w)", _flag(name), text)
    for word in MULTIPLE_WORDS:
        text = re.sub(rf"(?<![\w.]){re.escape(word)}(?!\w)", "--model (its shape multiple)", text)
    return type(err)(text)


def plan_config(args: argparse.Namespace) -> Config:
    """The config to plan, read once: the --config recipe (a bench config: its multigrid run) with its
    key=value overrides or, without --config, the default recipe with the schedule flags applied."""
    if args.config is not None:
        refuse_ignored_flags(args)
        return load_any_config(resolve_recipe(args.config), args.overrides)
    if args.overrides:
        raise ConfigError(f"key=value overrides need --config (got {args.overrides[0]!r})")
    try:
        return override(load_config(resolve_recipe(DEFAULT_RECIPE)), **flag_overrides(args))
    except ConfigError as err:
        raise name_flags(err) from None


# Training-set sizes assumed when a recipe's list is not on this machine: what PySlowFast runs use.
KNOWN_SIZES = {"kinetics": (K400_TRAIN_SIZE, "Kinetics-400's training clips"),
               "ssv2": (168913, "Something-Something V2's training videos"),
               "charades": (7985, "Charades' training videos")}


def recipe_dataset_size(cfg) -> tuple[int, str]:
    """Clips in the recipe's training list, and where that figure came from (the list, or, when it is
    not here, the published size of the dataset it names)."""
    from mgvideo.data.prepare import read_split

    path = Path(cfg.data.root) / cfg.data.train_list
    try:
        return len(read_split(cfg, cfg.data.train_list).records), f"the videos listed in {path}"
    except MgvideoError:
        if cfg.data.dataset == "synthetic":
            from mgvideo.data.synthetic import SIZES

            spec = SIZES.get(cfg.data.synthetic_size)
            if spec is not None:
                return spec.train_per_class * cfg.data.num_classes, (
                    f"the synthetic '{cfg.data.synthetic_size}' set, not generated yet")
        if cfg.data.dataset not in KNOWN_SIZES:
            raise ConfigError(f"--dataset-size: {path} is not here to count; give --dataset-size N") from None
        size, what = KNOWN_SIZES[cfg.data.dataset]
        return size, f"{what} ({path} is not here; --dataset-size N to change)"


def plan_inputs(cfg: Config, args: argparse.Namespace) -> PlanInputs:
    """The schedule, LR, per-device batch and passes of the config, exactly as `mgvideo train` builds them,
    and where the clip count came from: --devices, else the recipe's `solver.recipe_devices`, else one;
    clips from --dataset-size, else the recipe's training list (without --config: Kinetics-400's). Without
    --config, an error names the flag that set the key."""
    try:
        return _build_inputs(cfg, args)
    except (ConfigError, ScheduleError) as err:
        raise (err if args.config else name_flags(err)) from None


def _build_inputs(cfg: Config, args: argparse.Namespace) -> PlanInputs:
    """`plan_inputs` without the renaming of errors."""
    from mgvideo.engine.builders import build_lr_config, build_schedule
    from mgvideo.engine.device import device_plan
    from mgvideo.models.zoo import get_preset

    devices = args.devices or cfg.solver.recipe_devices or 1
    dataset_size, source = args.dataset_size, None
    if dataset_size is None:
        dataset_size, source = recipe_dataset_size(cfg) if args.config else (K400_TRAIN_SIZE, None)
    no_bn = get_preset(cfg.model.name).family == "vit"  # a transformer: BN size 0 prints "none"
    schedule = build_schedule(cfg)
    plan = device_plan(cfg, devices, schedule)  # the passes `train` splits each step into
    loader = LoaderNumbers(dataset_size, plan.batch, devices, 0 if no_bn else cfg.model.bn_base_size,
                           plan.micro_batches)
    return PlanInputs(schedule, build_lr_config(cfg, devices), loader, plan, source)


def device_summary(cfg: Config, args: argparse.Namespace, plan: DevicePlan) -> dict:
    """What the devices mean for the run: per-device batch, passes per step (and why), global batch, LR,
    and the line the table prints."""
    base_lr = cfg.solver.base_lr
    line = plan.describe(base_lr) if args.config else (
        f"devices: {plan.devices}; {plan.passes()}; global batch {plan.global_batch}; base LR {base_lr:g}")
    return {"devices": plan.devices, "per_device_batch": plan.batch, "micro_batches": plan.micro_batches,
            "global_batch": plan.global_batch, "base_lr": _clean(base_lr * plan.lr_scale), "line": line}


# Why a model family rounds shapes to a multiple (zoo.shape_multiple).
MULTIPLE_REASONS = {"slowfast": "its slow pathway takes one frame in {t}",
                    "vit": "its tubelet of {t} frames and patch of {s} pixels"}


def shape_multiple_note(cfg: Config, args: argparse.Namespace) -> dict:
    """The (frames, crop) multiple the schedule's shapes are rounded to, and why: none for flags without
    --model (the schedule alone, as PySlowFast rounds it); else `multigrid.shape_multiple` or the model's."""
    from mgvideo.engine.builders import run_shape_multiple
    from mgvideo.models.zoo import get_preset

    t, s = run_shape_multiple(cfg)
    if args.config is None and args.model is None:
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


def _clean(value: float) -> float:
    """A float without binary noise (0.08000000000000002 -> 0.08): six significant digits."""
    return float(f"{value:.6g}")


# -- what is printed ----------------------------------------------------------------------------------
def bn_groups(stage_batch: int, bn_base_size: int, devices: int, passes: int = 1) -> str:
    """BN layout of one forward pass of a stage whose per-device long-cycle batch is `stage_batch`, split
    into `passes` per step: the plan the trainer applies (`step_plan`); "none" for a model without BN
    (`bn_base_size` 0)."""
    if bn_base_size == 0:
        return "none"
    plan = step_plan(stage_batch, stage_batch, bn_base_size, devices, passes)
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


def stage_iterations(stage: Stage, loader: LoaderNumbers) -> int:
    """Iterations per epoch of a stage on each device."""
    factors = [slot.batch_factor for slot in stage.slots]
    return iterations_per_epoch(loader.dataset_size, loader.batch_size, loader.devices, factors)


def pass_slots(stage: Stage, loader: LoaderNumbers) -> list[list[int]]:
    """[clips, T, S] of one forward pass of each short-cycle slot: the step's batch on a device split into
    `loader.passes` passes, as `train_step` splits it."""
    return [[loader.batch_size * s.batch_factor // loader.passes, s.frames, s.crop] for s in stage.slots]


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
            "iterations_per_epoch": stage_iterations(stage, loader)})
    return rows


def time_per_clip_fn(profile: Path | None, schedule: MultigridSchedule):
    """Seconds per training clip at (frames, crop): from `mgvideo profile --json` rows, else proportional
    to T·S² (the FLOP count). Returns the function and a sentence saying which."""
    if profile is None:
        return (lambda t, s: float(t * s * s)), (
            "assuming time per clip ∝ T·S² (coarse shapes are often less efficient than that; "
            "--profile FILE with `mgvideo profile MODEL --config RECIPE --json` measures it)")
    try:
        rows = json.loads(profile.read_text())
        per_clip = {(int(r["frames"]), int(r["crop"])): float(r["sec_per_iter"]) / int(r["batch"])
                    for r in rows}
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"--profile: {profile}: not the JSON list `mgvideo profile --json` prints "
                          f"({err})") from None
    needed = {(s.frames, s.crop) for st in schedule.stages for s in st.slots} | {(schedule.cfg.frames,
                                                                                   schedule.cfg.crop)}
    missing = sorted(needed - set(per_clip))
    if missing:
        raise ConfigError(f"--profile: {profile} has no row for T={missing[0][0]}, S={missing[0][1]} "
                          "(profile the same recipe: mgvideo profile MODEL --config RECIPE --json)")
    return (lambda t, s: per_clip[(t, s)]), f"from the per-clip times in {profile}"


def plan_figures(schedule: MultigridSchedule, lr_cfg: LRConfig, loader: LoaderNumbers,
                 profile: Path | None = None) -> dict:
    """Iterations, the iteration saving, the FLOP ratio and the expected speed-up in training time against
    the baseline (the same recipe without multigrid, on the same data and devices)."""
    cfg = schedule.cfg
    baseline = cfg.max_epoch * iterations_per_epoch(loader.dataset_size, loader.batch_size, loader.devices)
    iters = sum(s.epochs * stage_iterations(s, loader) for s in schedule.stages)
    per_clip, basis = time_per_clip_fn(profile, schedule)
    # An iteration of slot j trains batch_j clips; the sampler cycles the slots in turn.
    seconds = sum(st.epochs * stage_iterations(st, loader) * sum(
        loader.batch_size * s.batch_factor * per_clip(s.frames, s.crop) for s in st.slots) / len(st.slots)
        for st in schedule.stages)
    baseline_seconds = baseline * loader.batch_size * per_clip(cfg.frames, cfg.crop)
    return {"epochs": schedule.max_epoch, "baseline_epochs": cfg.max_epoch, "iterations": iters,
            "baseline_iterations": baseline, "iteration_saving": _clean(baseline / iters),
            "flop_ratio": _clean(schedule.flop_ratio()), "time_speedup": _clean(baseline_seconds / seconds),
            "time_speedup_basis": basis, "reference_epoch_compression": _clean(schedule.iteration_saving),
            "warmup_epochs": _clean(warmup_epochs(schedule, lr_cfg))}


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
    return _clean(schedule.flop_ratio(cost))


# -- the command --------------------------------------------------------------------------------------
DESCRIPTION = """Plan a multigrid run: stages, shapes, iterations, the saving against the baseline and the
expected speed-up in time. With --config, the recipe gives everything (devices: solver.recipe_devices, else 1;
clips: its training list; shapes rounded to its model's multiple). Without it, the flags describe the
schedule alone, PySlowFast's to the epoch (--model NAME rounds shapes to that model's multiple); unset flags
take PySlowFast's Kinetics SlowFast 8x8 stepwise multigrid recipe (kinetics/slowfast_r50_8x8_multigrid) on 8
devices."""


def register(subparsers) -> None:
    """Add `mgvideo plan` and its flags."""
    p = subparsers.add_parser(
        "plan", help="print, plot or dump a multigrid schedule",
        description=DESCRIPTION)
    p.add_argument("--frames", type=_positive_int, help="default clip length T (32)")
    p.add_argument("--crop", type=_positive_int, help="default crop S (224)")
    p.add_argument("--sampling-rate", type=_positive_int, help="(2)")
    p.add_argument("--steps", type=_int_list,
                   help="baseline LR steps in epochs (default 0,94,154,196; with cosine: equal slices)")
    p.add_argument("--max-epoch", type=int, help="baseline epochs (239)")
    p.add_argument("--gamma", type=float, help="(0.1)")
    p.add_argument("--epoch-factor", type=float, help="multigrid trains this many times the epochs (1.5)")
    p.add_argument("--long-cycle-factors", type=_pairs,
                   help='(t, s) pairs, e.g. "0.25,0.7071;0.5,0.7071;0.5,1;1,1"')
    p.add_argument("--short-cycle-factors", type=_float_list, help='e.g. "0.5,0.7071"')
    p.add_argument("--no-long-cycle", dest="long_cycle", action="store_const", const=False)
    p.add_argument("--no-short-cycle", dest="short_cycle", action="store_const", const=False)
    p.add_argument("--short-cycle-relative", action="store_const", const=True,
                   help="short-cycle crops from the current crop, not the default one (issue #429)")
    p.add_argument("--lr-policy", choices=("steps", "cosine"))
    p.add_argument("--base-lr", type=float, help="(0.1)")
    p.add_argument("--warmup-epochs", type=float,
                   help="(34, the Kinetics recipe's; 0, PySlowFast's default, where --steps or --max-epoch "
                        "describe another run)")
    p.add_argument("--warmup-start-lr", type=float, help="(0.01)")
    p.add_argument("--rescale-warmup", action="store_const", const=True,
                   help="stretch warmup by the multigrid epoch factor")
    p.add_argument("--batch-size", type=_positive_int, help="base per-device batch (8)")
    p.add_argument("--bn-base-size", type=_positive_int, help="clips per BN group (8)")
    p.add_argument("--model", metavar="NAME",
                   help="round shapes to this zoo model's multiple (a SlowFast's alpha, a ViT's tubelet and "
                        "patch), as training it would; default: none, the schedule alone")
    p.add_argument("--dataset-size", type=_positive_int,
                   help="training clips (default: the recipe's list; without --config, Kinetics-400's "
                        "240436)")
    p.add_argument("--devices", type=_positive_int,
                   help="devices to plan for (default: the recipe's solver.recipe_devices, else 1; without "
                        "--config, 8); the recipe's batch and LR are mapped onto them as "
                        "solver.device_scaling says (accumulation or linear LR scaling)")
    p.add_argument("--config", type=Path, metavar="CONFIG",
                   help="plan a trainer recipe; schedule flags are then an error (use key=value overrides)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for --config")
    p.add_argument("--profile", type=Path, metavar="PROFILE.json",
                   help="`mgvideo profile ... --json` output: the expected speed-up from measured times")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="also draw shape, batch and LR against epoch")
    p.set_defaults(func=run)


def check_plan(p: PlanInputs, args: argparse.Namespace) -> None:
    """Refuse, as `train` would, a plan that cannot run: too few clips for the devices or a stage, or a
    warmup longer than the run; and a plot file that is not a PNG."""
    loader = p.loader
    if loader.dataset_size < loader.devices:
        raise ConfigError(f"--dataset-size: {loader.dataset_size} clips cannot be shared by "
                          f"{loader.devices} devices")
    check_dataset_fits(p.schedule, loader.dataset_size, loader.batch_size, loader.devices)
    try:
        check_warmup_of(p.schedule, p.lr_cfg)
    except ConfigError as err:
        err = ConfigError(f"solver.{err}")
        raise (err if args.config else name_flags(err)) from None
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot: expected a .png file name (got {str(args.plot)!r})")


def plan_json(p: PlanInputs, figures: dict, devices: dict, shapes: dict, counted: float | None) -> dict:
    """What --json prints: the rows, the rewritten solver, the figures, the shape multiple and devices."""
    schedule = p.schedule
    return {"stages": stage_rows(schedule, p.lr_cfg, p.loader), "steps": list(schedule.steps),
            "lrs": [_clean(x) for x in schedule.lrs], "max_epoch": schedule.max_epoch,
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


def run(args: argparse.Namespace) -> int:
    """Plan the config (the recipe, or the flags) and print the table (or JSON), optionally plotting it."""
    cfg = plan_config(args)
    p = plan_inputs(cfg, args)
    check_plan(p, args)
    figures = plan_figures(p.schedule, p.lr_cfg, p.loader, args.profile)
    devices = device_summary(cfg, args, p.devices)
    shapes, counted = shape_multiple_note(cfg, args), counted_flop_ratio(cfg, p.schedule)
    if args.plot is not None:
        from mgvideo.engine.plots import plot_schedule

        plot_schedule(p.schedule, p.lr_cfg, p.loader.batch_size, args.plot)
    if args.json:
        print(json.dumps(plan_json(p, figures, devices, shapes, counted)))
        return 0
    print_plan(cfg, p, figures, devices, shapes, counted)
    if args.plot is not None:
        print(f"plot: {args.plot}")
    return 0
