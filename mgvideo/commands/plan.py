"""`mgvideo plan`: print (or plot, or dump as JSON) a multigrid schedule and what it saves.

The table, summary, JSON and plot functions take a `MultigridSchedule`, an `LRConfig` and the loader
numbers, so a trainer config can feed them as well as the command-line flags.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from mgvideo.errors import ConfigError, ScheduleError
from mgvideo.multigrid import (
    LRConfig,
    MultigridConfig,
    MultigridSchedule,
    bn_groups_for,
    iterations_per_epoch,
    lr_at,
)
from mgvideo.multigrid.fit import check_dataset_fits
from mgvideo.multigrid.lr import check_warmup_of, policy_lr, warmup_epochs
from mgvideo.multigrid.schedule import Stage

K400_STEPS = (0, 94, 154, 196)
# Kinetics-400 training clips as used by PySlowFast runs: 240436 / 64 gives the 3756 iterations per
# epoch logged in SlowFast issue #277 (the full K400 list has 246535; downloads miss some).
K400_TRAIN_SIZE = 240436


@dataclass(frozen=True)
class LoaderNumbers:
    """What turns epochs into iterations: clips per epoch, base per-device batch, devices, BN group size."""

    dataset_size: int = K400_TRAIN_SIZE
    batch_size: int = 8
    devices: int = 8
    bn_base_size: int = 8


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

# The schedule flags, their defaults (the Kinetics SlowFast 8x8 stepwise recipe) and the recipe key that
# replaces each under --config, where the flag would be ignored and is therefore an error.
SCHEDULE_FLAGS = {
    "frames": (32, "data.frames"), "crop": (224, "data.crop"), "sampling_rate": (2, "data.sampling_rate"),
    "steps": (None, "solver.steps"), "max_epoch": (239, "solver.max_epoch"), "gamma": (0.1, "solver.gamma"),
    "epoch_factor": (1.5, "multigrid.epoch_factor"),
    "long_cycle_factors": (None, "multigrid.long_cycle_factors"),
    "short_cycle_factors": (None, "multigrid.short_cycle_factors"),
    "long_cycle": (True, "multigrid.long_cycle"), "short_cycle": (True, "multigrid.short_cycle"),
    "short_cycle_relative": (False, "multigrid.short_cycle_relative"),
    "lr_policy": ("steps", "solver.lr_policy"),
    "base_lr": (0.1, "solver.base_lr"), "warmup_epochs": (34.0, "solver.warmup_epochs"),
    "warmup_start_lr": (0.01, "solver.warmup_start_lr"), "rescale_warmup": (False, "solver.rescale_warmup"),
    "batch_size": (8, "solver.batch_size"), "bn_base_size": (8, "model.bn_base_size"),
}


def _flag(field: str) -> str:
    return "--" + ("no-" if field in ("long_cycle", "short_cycle") else "") + field.replace("_", "-")


def _value(args: argparse.Namespace, name: str):
    """A schedule flag's value, or its default when not given."""
    value = getattr(args, name)
    return SCHEDULE_FLAGS[name][0] if value is None else value


def refuse_ignored_flags(args: argparse.Namespace) -> None:
    """With --config the recipe decides the schedule: a schedule flag beside it is an error, not dropped."""
    for name, (_, key) in SCHEDULE_FLAGS.items():
        if getattr(args, name) is not None:
            raise ConfigError(f"{_flag(name)}: not used with --config (the recipe sets {key}); "
                              f"give it as an override instead, e.g. {key}=...")


def configs_from_args(args: argparse.Namespace) -> tuple[MultigridConfig, LRConfig, LoaderNumbers]:
    """The schedule, LR and loader inputs named by the command-line flags."""
    defaults = MultigridConfig()
    v = {name: _value(args, name) for name in SCHEDULE_FLAGS}
    steps = v["steps"] if v["steps"] is not None else (K400_STEPS if v["lr_policy"] == "steps" else ())
    cfg = MultigridConfig(
        frames=v["frames"], crop=v["crop"], steps=steps, max_epoch=v["max_epoch"], gamma=v["gamma"],
        lr_policy=v["lr_policy"], long_cycle=v["long_cycle"], short_cycle=v["short_cycle"],
        epoch_factor=v["epoch_factor"],
        long_cycle_factors=v["long_cycle_factors"] or defaults.long_cycle_factors,
        short_cycle_factors=v["short_cycle_factors"] or defaults.short_cycle_factors,
        sampling_rate=v["sampling_rate"], short_cycle_relative=v["short_cycle_relative"])
    try:
        lr_cfg = LRConfig(base_lr=v["base_lr"], warmup_epochs=v["warmup_epochs"],
                          warmup_start_lr=v["warmup_start_lr"], rescale_warmup=v["rescale_warmup"])
    except ConfigError as err:
        raise ConfigError(f"{_flag(str(err).split(':')[0])}: {str(err).split(': ', 1)[1]}") from None
    return cfg, lr_cfg, LoaderNumbers(args.dataset_size or K400_TRAIN_SIZE, v["batch_size"],
                                      args.devices or 8, v["bn_base_size"])


# Training-set sizes assumed when a recipe's list is not on this machine: what PySlowFast runs use.
KNOWN_SIZES = {"kinetics": (K400_TRAIN_SIZE, "Kinetics-400's training clips"),
               "ssv2": (168913, "Something-Something V2's training videos"),
               "charades": (7985, "Charades' training videos")}


def recipe_dataset_size(cfg) -> tuple[int, str]:
    """Clips in the recipe's training list, and where that figure came from (the list, or, when it is
    not here, the published size of the dataset it names)."""
    from mgvideo.data.prepare import read_split
    from mgvideo.errors import MgvideoError

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


def configs_from_recipe(args: argparse.Namespace) -> tuple[MultigridSchedule, LRConfig, LoaderNumbers]:
    """The schedule, LR and per-device batch of a trainer recipe, exactly as `mgvideo train` builds them;
    devices from the recipe (`solver.recipe_devices`, else one) and clips from its training list unless
    --devices / --dataset-size say otherwise."""
    from mgvideo.engine.builders import build_lr_config, build_schedule
    from mgvideo.engine.device import per_device_batch
    from mgvideo.models.zoo import get_preset

    refuse_ignored_flags(args)
    cfg = recipe_config(args)
    args.devices = args.devices or cfg.solver.recipe_devices or 1
    if args.dataset_size is None:
        args.dataset_size, args.dataset_source = recipe_dataset_size(cfg)
    no_bn = get_preset(cfg.model.name).family == "vit"  # a transformer: BN size 0 prints "none"
    loader = LoaderNumbers(args.dataset_size, per_device_batch(cfg, args.devices), args.devices,
                           0 if no_bn else cfg.model.bn_base_size)
    return build_schedule(cfg), build_lr_config(cfg, args.devices), loader


def recipe_config(args: argparse.Namespace):
    """The --config recipe (a bench config: its multigrid run) with the overrides applied."""
    from mgvideo.config import load_any_config, resolve_recipe

    return load_any_config(resolve_recipe(args.config), args.overrides)


def device_plan_of(args: argparse.Namespace, lr_cfg: LRConfig, loader: LoaderNumbers) -> dict:
    """What the devices mean for the run: per-device batch, micro-batches, global batch, LR, and the line
    the table prints."""
    if args.config is None:
        return {"devices": loader.devices, "per_device_batch": loader.batch_size, "micro_batches": 1,
                "global_batch": loader.batch_size * loader.devices, "base_lr": _clean(lr_cfg.base_lr),
                "line": f"devices: {loader.devices}; per-device batch {loader.batch_size}; global batch "
                        f"{loader.batch_size * loader.devices}; base LR {lr_cfg.base_lr:g}"}
    from mgvideo.engine.device import device_plan

    cfg = recipe_config(args)
    plan = device_plan(cfg, args.devices)
    return {"devices": plan.devices, "per_device_batch": plan.batch, "micro_batches": plan.micro_batches,
            "global_batch": plan.global_batch, "base_lr": _clean(cfg.solver.base_lr * plan.lr_scale),
            "line": plan.describe(cfg.solver.base_lr)}


def _clean(value: float) -> float:
    """A float without binary noise (0.08000000000000002 -> 0.08): six significant digits."""
    return float(f"{value:.6g}")


# -- what is printed ----------------------------------------------------------------------------------
def bn_groups(per_device_batch: int, bn_base_size: int, devices: int) -> str:
    """BN layout of a per-device long-cycle batch: the plan the trainer applies (`bn_groups_for`); "none"
    for a model without BN (`bn_base_size` 0)."""
    if bn_base_size == 0:
        return "none"
    plan = bn_groups_for(per_device_batch, per_device_batch, bn_base_size, devices)
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


def schedule_table(schedule: MultigridSchedule, lr_cfg: LRConfig, loader: LoaderNumbers) -> str:
    """One row per stage: LR step, epochs, per-device (B,T,S) of each short-cycle slot, BN, LR, it/epoch."""
    header = ("stage", "LR step", "epochs", "per-device (B,T,S) per slot", "BN groups", "LR", "it/epoch")
    rows = [header]
    for stage in schedule.stages:
        name = f"{stage.index}" + (" (FT)" if stage.finetune else "")
        slots = " ".join(f"({loader.batch_size * s.batch_factor},{s.frames},{s.crop})" for s in stage.slots)
        rows.append((name, str(stage.lr_step), f"{stage.start_epoch}-{stage.end_epoch}", slots,
                     bn_groups(loader.batch_size * stage.batch_factor, loader.bn_base_size, loader.devices),
                     stage_lrs(schedule, lr_cfg, stage), str(stage_iterations(stage, loader))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def stage_rows(schedule: MultigridSchedule, lr_cfg: LRConfig, loader: LoaderNumbers) -> list[dict]:
    """The table's rows as data (what --json holds per stage)."""
    rows = []
    for stage in schedule.stages:
        rows.append({
            "stage": stage.index, "finetune": stage.finetune, "lr_step": stage.lr_step,
            "start_epoch": stage.start_epoch, "end_epoch": stage.end_epoch,
            "batch_factor": stage.batch_factor, "frames": stage.frames, "crop": stage.crop,
            "slots": [[loader.batch_size * s.batch_factor, s.frames, s.crop] for s in stage.slots],
            "bn_groups": bn_groups(loader.batch_size * stage.batch_factor, loader.bn_base_size,
                                   loader.devices),
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
        f"warmup: {lr_cfg.warmup_start_lr:g} -> {lr_at(warmup, schedule, lr_cfg):.3g} over {warmup:g} epochs",
        f"iteration saving: {f['iteration_saving']:.3g}x ({f['iterations']} iterations against the "
        f"baseline's {f['baseline_iterations']} on {loader.dataset_size} clips)",
        f"FLOPs vs baseline: {f['flop_ratio']:.3f} (assumes cost per clip ∝ T·S², every clip seen "
        "once per epoch, a slot's share of clips = its share of the cycle's batch)",
        f"expected speed-up in training time: {f['time_speedup']:.3g}x, {f['time_speedup_basis']}",
        f"(the reference's epoch compression before fine-tuning, PySlowFast's 'iteration saving': "
        f"{f['reference_epoch_compression']:.4g})",
    ])


def counted_flop_ratio(args: argparse.Namespace, schedule: MultigridSchedule) -> float | None:
    """For a ViT recipe, the FLOP ratio with each shape's cost counted on the model (attention is
    quadratic in tokens, so T·S² overstates coarse shapes); None for other models."""
    from mgvideo.models.flops import clip_cost_fn
    from mgvideo.models.zoo import PRESETS

    cfg = recipe_config(args)
    if PRESETS[cfg.model.name].family != "vit":
        return None
    cost = clip_cost_fn(cfg.model.name, cfg.data.num_classes, **cfg.model.options)
    return _clean(schedule.flop_ratio(cost))


# -- the command --------------------------------------------------------------------------------------
def register(subparsers) -> None:
    """Add `mgvideo plan` and its flags."""
    p = subparsers.add_parser(
        "plan", help="print, plot or dump a multigrid schedule",
        description="Plan a multigrid run: stages, shapes, iterations, the saving against the baseline and "
                    "the expected speed-up in time. With --config, the recipe gives everything (devices: "
                    "solver.recipe_devices, else 1; clips: its training list). Without it, the flags "
                    "describe the schedule; their defaults are PySlowFast's Kinetics SlowFast 8x8 stepwise "
                    "multigrid recipe on 8 devices.")
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
    p.add_argument("--warmup-epochs", type=float, help="(34)")
    p.add_argument("--warmup-start-lr", type=float, help="(0.01)")
    p.add_argument("--rescale-warmup", action="store_const", const=True,
                   help="stretch warmup by the multigrid epoch factor")
    p.add_argument("--batch-size", type=_positive_int, help="base per-device batch (8)")
    p.add_argument("--bn-base-size", type=_positive_int, help="clips per BN group (8)")
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


def run(args: argparse.Namespace) -> int:
    """Build the schedule from the recipe or the flags and print the table (or JSON), optionally plotting
    it."""
    args.dataset_source = None
    if args.config is not None:
        schedule, lr_cfg, loader = configs_from_recipe(args)
    elif args.overrides:
        raise ConfigError(f"key=value overrides need --config (got {args.overrides[0]!r})")
    else:
        cfg, lr_cfg, loader = configs_from_args(args)
        try:
            schedule = MultigridSchedule(cfg)
        except ScheduleError as err:
            field, _, problem = str(err).partition(": ")
            raise ScheduleError(f"{_flag(field)}: {problem}") from None
    if loader.dataset_size < loader.devices:
        raise ConfigError(f"--dataset-size: {loader.dataset_size} clips cannot be shared by "
                          f"{loader.devices} devices")
    check_dataset_fits(schedule, loader.dataset_size, loader.batch_size, loader.devices)
    try:
        check_warmup_of(schedule, lr_cfg)
    except ConfigError as err:
        field, _, problem = str(err).partition(": ")
        raise ConfigError(f"{'solver.' + field if args.config else _flag(field)}: {problem}") from None
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot: expected a .png file name (got {str(args.plot)!r})")
    figures = plan_figures(schedule, lr_cfg, loader, args.profile)
    devices = device_plan_of(args, lr_cfg, loader)
    counted = counted_flop_ratio(args, schedule) if args.config is not None else None
    if args.plot is not None:
        from mgvideo.engine.plots import plot_schedule

        plot_schedule(schedule, lr_cfg, loader.batch_size, args.plot)
    if args.json:
        print(json.dumps({"stages": stage_rows(schedule, lr_cfg, loader), "steps": list(schedule.steps),
                          "lrs": [_clean(x) for x in schedule.lrs], "max_epoch": schedule.max_epoch,
                          "dataset_size": loader.dataset_size, **figures, "flop_ratio_counted": counted,
                          "devices": {k: v for k, v in devices.items() if k != "line"}}))
        return 0
    print(schedule_table(schedule, lr_cfg, loader))
    print()
    if args.dataset_source:
        print(f"dataset: {loader.dataset_size} clips, {args.dataset_source}")
    print(summary(schedule, lr_cfg, loader, figures))
    print(devices["line"])
    if counted is not None:
        print(f"FLOPs vs baseline counted on {recipe_config(args).model.name} (attention's quadratic cost "
              f"in tokens included): {counted:.3f}")
    if args.plot is not None:
        print(f"plot: {args.plot}")
    return 0
